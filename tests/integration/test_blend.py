"""Issue 20's ensembles: several experiments and runs in one ensemble, weighted; ``blend`` of
saved probability files equal to ``predict`` of the same models; per-class thresholds from a
file applied exactly."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hpatool.engine.scoring.blend import read_probability_file
from tests.support import SIZE, TRAIN, Invoke, Workspace, one_line_error, register


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(40, SIZE, seed=5)


def _train(cli: Invoke, out: Path, experiment: str, fold: int, *extra: str) -> None:
    result = cli(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0", "--out", out,
        "--fold", str(fold), "--experiment", experiment, "--name", f"{experiment}-f{fold}",
        *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _predict(cli: Invoke, out: Path, name: str, *models: str) -> tuple[Path, Path]:
    sub, probs = out / f"{name}.csv", out / f"{name}-probs.csv"
    result = cli("predict", "--dataset", "syn", "--workers", "0", *models, "--out", sub,
                 "--probs", probs)  # fmt: skip
    assert result.exit_code == 0, result.output
    return sub, probs


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_experiments_and_runs_ensemble_with_weights_and_blend_alike(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    runs = tmp_path / "runs"
    for fold in (0, 1):
        _train(cli, runs, "e1", fold)
        _train(cli, runs, "e2", fold, "--seed", "1")
    out = tmp_path / "out"
    out.mkdir()
    _, p1 = _predict(cli, out, "e1", "--experiment", "e1")
    _, p2 = _predict(cli, out, "e2", "--experiment", "e2")
    ids, a = read_probability_file(p1)
    ids2, b = read_probability_file(p2)
    assert ids == ids2

    # two experiments in one ensemble: the mean of their members, then weighted 3:1
    _, p12 = _predict(cli, out, "e12", "--experiment", "e1", "--experiment", "e2")
    assert np.allclose(read_probability_file(p12)[1], (a + b) / 2, rtol=0, atol=1e-12)
    sub31, p31 = _predict(cli, out, "e31", "--experiment", "e1:3", "--experiment", "e2:1")
    assert np.allclose(read_probability_file(p31)[1], 0.75 * a + 0.25 * b, rtol=0, atol=1e-12)
    # --weight in order of the experiments is the same ensemble
    sub31w, _ = _predict(cli, out, "e31w", "--experiment", "e1", "--experiment", "e2",
                         "--weight", "3", "--weight", "1")  # fmt: skip
    assert _rows(sub31w) == _rows(sub31)
    # runs and an experiment mixed: each run its own weight, the experiment's split
    _, pm = _predict(cli, out, "mixed", "--run", "e2-f0:2", "--experiment", "e1:2")
    _, r0 = _predict(cli, out, "r0", "--run", "e2-f0")
    _, f0 = _predict(cli, out, "f0", "--run", "e1-f0")
    _, f1 = _predict(cli, out, "f1", "--run", "e1-f1")
    expected = 0.5 * read_probability_file(r0)[1] + 0.25 * (
        read_probability_file(f0)[1] + read_probability_file(f1)[1]
    )
    assert np.allclose(read_probability_file(pm)[1], expected, rtol=0, atol=1e-12)

    # blend of the saved files with thresholds tuned on the same weighted OOF mix = predict
    blended = out / "blend31.csv"
    result = cli("blend", p1, p2, "--weight", "3", "--weight", "1", "--oof", "e1", "--oof", "e2",
                 "--out", blended)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert " out-of-fold samples" in result.stdout and "x0.75" in result.stdout
    assert _rows(blended) == _rows(sub31)
    equal = out / "blend11.csv"
    assert cli("blend", p1, p2, "--oof", "e1", "--oof", "e2", "--out", equal).exit_code == 0
    assert _rows(equal) == _rows(out / "e12.csv")

    # mistakes: one line each, nothing written
    text = one_line_error(cli("predict", "--dataset", "syn", "--experiment", "e1", "--run",
                              "e1-f0", "--out", out / "x.csv"))  # fmt: skip
    assert "run 'e1-f0' is given twice" in text
    text = one_line_error(cli("predict", "--dataset", "syn", "--run", "e1-f0:abc",
                              "--out", out / "x.csv"))  # fmt: skip
    assert "--run e1-f0:abc: weight 'abc' is not a positive number" in text
    mixed = ("--run", "e1-f0", "--experiment", "e2", "--weight", "1", "--weight", "2")
    text = one_line_error(cli("predict", "--dataset", "syn", *mixed, "--out", out / "x.csv"))
    assert "--weight with both --run and --experiment is ambiguous" in text
    text = one_line_error(cli("blend", p1, p2, "--out", out / "x.csv"))
    assert "give --oof" in text
    text = one_line_error(cli("blend", p1, p2, "--weight", "1", "--oof", "e1", "--oof", "e2",
                              "--out", out / "x.csv"))  # fmt: skip
    assert "1 --weight values for 2 files" in text
    short = out / "short.csv"
    short.write_text("".join(p2.read_text().splitlines(keepends=True)[:-1]))
    text = one_line_error(cli("blend", p1, short, "--threshold", "0.5", "--out", out / "x.csv"), 1)
    assert f"{short}: its Ids differ from {p1}'s (1 missing, 0 extra" in text
    text = one_line_error(cli("blend", p1, p1, "--threshold", "0.5", "--out", p1))
    assert "--out" in text
    assert not (out / "x.csv").exists()


def test_a_thresholds_file_is_applied_exactly(
    cli: Invoke, trained_run: Workspace, tmp_path: Path
) -> None:
    # run r1 on dataset 'syn': the session's, copied (``trained_run``; ``cli`` uses its home)
    table = tmp_path / "thresholds.csv"
    rng = np.random.default_rng(0)
    values = rng.uniform(0.2, 0.6, 28)
    table.write_text(
        "class,threshold\n" + "".join(f"{c},{float(v)!r}\n" for c, v in enumerate(values)),
        encoding="utf-8",
    )
    sub, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    result = cli("predict", "--dataset", "syn", "--run", "r1", "--workers", "0", "--out", sub,
                 "--probs", probs, "--threshold", table, "--min-labels", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    ids, p = read_probability_file(probs)
    got = {row["Id"]: row["Predicted"] for row in csv.DictReader(sub.open())}
    for sid, row in zip(ids, p, strict=True):
        expected = " ".join(str(c) for c in np.flatnonzero(row >= values))
        assert got[sid] == expected
    # a file naming some classes: the others keep the run's tuned thresholds
    partial = tmp_path / "some.csv"
    partial.write_text("class,threshold\nNucleoplasm,0.99\n", encoding="utf-8")
    result = cli("predict", "--dataset", "syn", "--run", "r1", "--workers", "0", "--out", sub,
                 "--threshold", partial, "--min-labels", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not any("0" in row["Predicted"].split() for row in csv.DictReader(sub.open()))
    evaluated = cli("evaluate", "--run", "r1", "--dataset", "syn", "--fold", "0", "--workers",
                    "0", "--threshold", table, "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    bad = tmp_path / "bad.csv"
    bad.write_text("class,threshold\n3,1.2\n", encoding="utf-8")
    text = one_line_error(cli("predict", "--dataset", "syn", "--run", "r1", "--out", sub,
                              "--threshold", bad), 1)  # fmt: skip
    assert f"{bad}, line 2: threshold '1.2' of class '3' is not a number in [0, 1]" in text
    text = one_line_error(cli("predict", "--dataset", "syn", "--run", "r1", "--out", sub,
                              "--threshold", tmp_path / "absent.csv"))  # fmt: skip
    assert "absent.csv: no such file" in text
