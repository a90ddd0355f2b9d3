"""``hpatool predict`` / ``evaluate`` end to end on a small trained run (the session's, see
``trained_run``), and on a test set of real sample_submission.csv ids."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.imaging import save_png
from hpatool.synth import generate_sample, sample_targets
from tests.support import REPO, RUN_FOLD, SIZE, Workspace, run_cli

N_TEST = 20
N = 24  # the samples of the session's dataset 'syn'


@dataclass(frozen=True)
class SampleSet:
    sub: Path  # the first rows of the real sample_submission.csv, in that file's order
    test_dir: Path


@pytest.fixture(scope="module")
def sample_set(submission_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """Synthetic images of the first ids of the real sample_submission.csv, made once for the
    module: tests must not modify them."""
    base = tmp_path_factory.mktemp("predict")
    test_dir = base / "test"
    test_dir.mkdir()
    lines = submission_csv.read_text().splitlines()[: N_TEST + 1]
    sub = base / "sample_submission_head.csv"
    sub.write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for line, labels in zip(lines[1:], sample_targets(N_TEST, rng), strict=True):
        arr = generate_sample(labels, SIZE, rng)
        for ch, colour in zip(arr, ("red", "green", "blue", "yellow"), strict=True):
            save_png(ch, test_dir / f"{line.split(',')[0]}_{colour}.png")
    return SampleSet(sub, test_dir)


@pytest.fixture
def trained(trained_run: Workspace, sample_set: SampleSet) -> dict[str, Path]:
    """A private copy of the session's run 'r1' (``ARCH``, on the 24 samples of 'syn') with
    the test set registered as 'te'."""
    res = run_cli(
        trained_run.home, "datasets", "add", "te", "--labels", sample_set.sub,
        "--root", sample_set.test_dir,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return {"home": trained_run.home, "sub": sample_set.sub, "test_dir": sample_set.test_dir}


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_submission_format_and_order(trained: dict[str, Path], tmp_path: Path) -> None:
    out, probs = tmp_path / "submission.csv", tmp_path / "probs.csv"
    res = run_cli(
        trained["home"],
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--out",
        out,
        "--probs",
        probs,
        "--crops",
        "4",
    )
    assert res.exit_code == 0, res.output
    rows = read_rows(out)
    assert rows[0] == ["Id", "Predicted"]
    expected_ids = [line.split(",")[0] for line in trained["sub"].read_text().splitlines()[1:]]
    assert [r[0] for r in rows[1:]] == expected_ids
    for _, predicted in rows[1:]:
        labels = [int(v) for v in predicted.split()]
        assert labels == sorted(set(labels)) and labels and all(0 <= v < 28 for v in labels)
    prow = read_rows(probs)
    assert prow[0] == ["Id", *[str(c) for c in range(28)]]
    assert [r[0] for r in prow[1:]] == expected_ids
    values = np.array([[float(v) for v in r[1:]] for r in prow[1:]])
    assert values.shape == (N_TEST, 28) and ((values >= 0) & (values <= 1)).all()


def test_max_is_at_least_mean_and_seeds_repeat(trained_run: Workspace, tmp_path: Path) -> None:
    def probs(agg: str, seed: int, name: str) -> np.ndarray:
        p = tmp_path / name
        res = run_cli(
            trained_run.home,
            "predict",
            "--run",
            "r1",
            "--dataset",
            "syn",
            "--agg",
            agg,
            "--seed",
            seed,
            "--out",
            tmp_path / f"sub-{name}",
            "--probs",
            p,
            "--crops",
            "4",
            "--tta",
            "crops",
            "--crop-size",
            "32",
        )
        assert res.exit_code == 0, res.output
        return np.array([[float(v) for v in r[1:]] for r in read_rows(p)[1:]])

    p_max, p_mean = probs("max", 0, "max.csv"), probs("mean", 0, "mean.csv")
    assert (p_max >= p_mean - 1e-6).all()
    assert (p_max > p_mean + 1e-6).any()  # the crops really differ
    again = probs("max", 0, "max2.csv")
    assert (tmp_path / "max.csv").read_bytes() == (tmp_path / "max2.csv").read_bytes()
    assert (tmp_path / "sub-max.csv").read_bytes() == (tmp_path / "sub-max2.csv").read_bytes()
    assert np.array_equal(again, p_max)
    other = probs("max", 1, "max-seed1.csv")
    assert not np.array_equal(other, p_max)


def test_min_labels(trained_run: Workspace, tmp_path: Path) -> None:
    def labels(*extra: object) -> list[list[int]]:
        out = tmp_path / "s.csv"
        res = run_cli(
            trained_run.home,
            "predict",
            "--run",
            "r1",
            "--dataset",
            "syn",
            "--out",
            out,
            "--crops",
            "2",
            *extra,
        )
        assert res.exit_code == 0, res.output
        return [[int(v) for v in r[1].split()] for r in read_rows(out)[1:]]

    assert all(len(lab) == 0 for lab in labels("--threshold", "0.999", "--min-labels", "0"))
    assert all(len(lab) == 3 for lab in labels("--threshold", "0.999", "--min-labels", "3"))
    assert all(len(lab) == 28 for lab in labels("--threshold", "0.001", "--min-labels", "1"))


def test_bad_input(submission_csv: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    home = trained["home"]
    res = run_cli(home, "predict", "--run", "nope", "--dataset", "te")
    assert res.exit_code == 2
    assert "unknown run 'nope'" in res.stderr and "(known: r1)" in res.stderr
    run_cli(home, "datasets", "add", "labels-only", "--labels", submission_csv)
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "labels-only")
    assert res.exit_code == 2 and "has no image folder" in res.stderr
    res = run_cli(
        home,
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--crop-size",
        "49",
        "--out",
        tmp_path / "x.csv",
    )
    assert res.exit_code == 2
    assert "--crop-size 49 is larger than the 48x48 images" in res.stderr
    res = run_cli(home, "predict", "--dataset", "te")
    assert res.exit_code == 2 and "give --run RUN or --experiment EXP (repeat them" in res.stderr
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "te", "--threshold", "abc")
    assert res.exit_code == 2 and "--threshold 'abc' is invalid" in res.stderr
    res = run_cli(home, "predict", "--checkpoint", tmp_path / "none.pt", "--dataset", "te")
    assert res.exit_code == 2 and "no such checkpoint file" in res.stderr
    assert not (tmp_path / "x.csv").exists()


def test_corrupt_image_gives_partial_file(trained: dict[str, Path], tmp_path: Path) -> None:
    home = trained["home"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in trained["test_dir"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    bad_id = trained["sub"].read_text().splitlines()[3].split(",")[0]
    green = broken / f"{bad_id}_green.png"
    green.write_bytes(green.read_bytes()[:-40])  # a good header, a cut body: fails while scored
    assert (
        run_cli(
            home, "datasets", "add", "broken", "--labels", trained["sub"], "--root", broken
        ).exit_code
        == 0
    )
    out = tmp_path / "submission.csv"
    res = run_cli(
        home, "predict", "--run", "r1", "--dataset", "broken", "--out", out, "--crops", "2"
    )
    assert res.exit_code == 1
    assert bad_id in res.stderr and "submission.partial.csv" in res.stderr
    assert not out.exists()
    rows = read_rows(tmp_path / "submission.partial.csv")
    assert len(rows) == N_TEST and bad_id not in [r[0] for r in rows]
    (tmp_path / "submission.partial.csv").unlink()
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "broken", "--out", out, "--strict")
    assert res.exit_code == 1 and bad_id in res.stderr
    assert not out.exists() and not (tmp_path / "submission.partial.csv").exists()


def test_evaluate_matches_sklearn(trained_run: Workspace, tmp_path: Path) -> None:
    from sklearn.metrics import f1_score

    from hpatool.engine.config import PredictConfig
    from hpatool.engine.scoring.evaluate import evaluate_run
    from hpatool.registry import Registry

    with Registry.open(trained_run.home) as reg:
        for agg in ("max", "mean"):
            config = PredictConfig(dataset="syn", run=["r1"], crops=3, agg=agg)
            result = evaluate_run(reg, config)
            assert result.fold == RUN_FOLD  # the run's validation fold by default
            assert result.y_true is not None and result.y_pred is not None
            expected = f1_score(result.y_true, result.y_pred, average="macro", zero_division=0)
            assert result.macro_f1 == pytest.approx(expected, abs=1e-12)
    plot = tmp_path / "f1.png"
    res = run_cli(
        trained_run.home,
        "evaluate",
        "--run",
        "r1",
        "--dataset",
        "syn",
        "--json",
        "--plot",
        plot,
        "--agg",
        "mean",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["agg"] == "mean" and doc["fold"] == RUN_FOLD and len(doc["classes"]) == 28
    assert set(doc["classes"][0]) == {"index", "name", "precision", "recall", "f1", "support"}
    assert doc["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in doc["classes"]]))
    with Image.open(plot) as img:
        assert img.format == "PNG"


def test_config_file_and_flags_that_win(trained_run: Workspace, tmp_path: Path) -> None:
    home = trained_run.home
    from_file, from_flag = tmp_path / "from-file.csv", tmp_path / "from-flag.csv"
    toml = tmp_path / "scoring.toml"
    toml.write_text(
        "[predict]\n"
        'run = "r1"\ndataset = "syn"\ncrops = 2\nthreshold = 0.999\nmin-labels = 0\n'
        f"out = {json.dumps(str(from_file))}\n"
        '[evaluate]\nrun = "r1"\ndataset = "syn"\ncrops = 2\nagg = "mean"\n'
    )
    res = run_cli(home, "predict", "--config", toml)
    assert res.exit_code == 0, res.output
    rows = read_rows(from_file)
    assert len(rows) == N + 1 and all(r[1] == "" for r in rows[1:])  # 0.999, 0 labels
    from_file.unlink()
    res = run_cli(home, "predict", "--config", toml, "--out", from_flag, "--min-labels", "2")
    assert res.exit_code == 0, res.output
    assert not from_file.exists()
    assert all(len(r[1].split()) == 2 for r in read_rows(from_flag)[1:])
    res = run_cli(home, "evaluate", "--config", toml, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["dataset"], doc["agg"], doc["crops"], doc["fold"]) == ("syn", "mean", 2, RUN_FOLD)
    res = run_cli(home, "evaluate", "--config", toml, "--json", "--agg", "max", "--fold", "0")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["agg"], doc["fold"]) == ("max", 0)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_same_file(trained_run: Workspace, tmp_path: Path) -> None:
    home = trained_run.home
    single = tmp_path / "single.csv"
    res = run_cli(
        home,
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "syn",
        "--out",
        single,
        "--probs",
        tmp_path / "single-probs.csv",
        "--crops",
        "3",
        "--batch-size",
        "4",
    )
    assert res.exit_code == 0, res.output
    env = {**os.environ, "HPATOOL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    double = tmp_path / "double.csv"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hpatool",
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "syn",
        "--out",
        str(double),
        "--probs",
        str(tmp_path / "double-probs.csv"),
        "--crops",
        "3",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert double.read_bytes() == single.read_bytes()
    assert (tmp_path / "double-probs.csv").read_bytes() == (
        tmp_path / "single-probs.csv"
    ).read_bytes()
