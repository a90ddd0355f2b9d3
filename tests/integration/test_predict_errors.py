"""``hpatool predict`` / ``evaluate`` on bad input: unreadable images (partial and failures
files), output paths checked before any scoring, where the thresholds come from, the validation
fold of a bare checkpoint, row order, foreign checkpoint files and Typer's range errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.engine.models.checkpoint import load_checkpoint, save_checkpoint
from hpatool.engine.scoring import ensemble as ensemble_mod
from hpatool.engine.scoring.model_source import ModelSource, resolve_source, resolve_thresholds
from hpatool.engine.scoring.score import decide_labels
from hpatool.errors import DataError
from hpatool.imaging import save_png
from hpatool.registry import Registry
from hpatool.synth import generate_sample, sample_targets
from tests.support import (
    RUN_CROPS,
    RUN_FOLD,
    SIZE,
    Invoke,
    Workspace,
    one_line_error,
    run_cli,
)

N_TEST = 10
FOLD = RUN_FOLD  # the run's validation fold; not the default 0, so a wrong default shows
COLOURS = ("red", "green", "blue", "yellow")
FAST = ("--crops", str(RUN_CROPS), "--device", "cpu", "--workers", "0")  # the run's view


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@dataclass(frozen=True)
class SampleSet:
    ids: list[str]  # the test set's ids, in its (shuffled) file order
    sub: Path
    test_dir: Path


@dataclass(frozen=True)
class Trained:
    home: Path
    ids: list[str]  # the test set's ids, in its (shuffled) file order
    sub: Path
    test_dir: Path
    run_dir: Path


@pytest.fixture(scope="module")
def sample_set(submission_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """Synthetic images of real sample_submission.csv ids in a shuffled order, made once for
    the module: tests must not modify them (``copy_dataset`` copies them)."""
    base = tmp_path_factory.mktemp("predict-errors")
    rng = np.random.default_rng(7)
    real = submission_csv.read_text().splitlines()
    picked = [real[1 + int(i)] for i in rng.choice(len(real) - 1, size=N_TEST, replace=False)]
    ids = [line.split(",")[0] for line in picked]
    assert ids != sorted(ids)  # only a shuffled file proves the order is kept
    sub = base / "sample_submission_shuffled.csv"
    sub.write_text("\n".join([real[0], *picked]) + "\n")
    test_dir = base / "test"
    test_dir.mkdir()
    for sample_id, labels in zip(ids, sample_targets(N_TEST, rng), strict=True):
        arr = generate_sample(labels, SIZE, rng)
        for ch, colour in zip(arr, COLOURS, strict=True):
            save_png(ch, test_dir / f"{sample_id}_{colour}.png")
    return SampleSet(ids, sub, test_dir)


@pytest.fixture
def trained(trained_run: Workspace, sample_set: SampleSet) -> Trained:
    """A private copy of the session's run (a 2-epoch ``ARCH`` run 'r1', validation fold 1,
    on 24 synthetic samples 'syn'; see ``trained_run``) with the test set registered as 'te'."""
    res = run_cli(
        trained_run.home, "datasets", "add", "te", "--labels", sample_set.sub,
        "--root", sample_set.test_dir,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return Trained(
        trained_run.home, sample_set.ids, sample_set.sub, sample_set.test_dir, trained_run.run_dir
    )


def copy_dataset(trained: Trained, tmp_path: Path, name: str) -> Path:
    """A private copy of the test images, registered as ``name`` (same ids, same order)."""
    folder = tmp_path / f"{name}-images"
    shutil.copytree(trained.test_dir, folder)
    res = run_cli(
        trained.home,
        "datasets",
        "add",
        name,
        "--labels",
        trained.sub,
        "--root",
        folder,
    )
    assert res.exit_code == 0, res.output
    return folder


def no_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model loading or scoring fail loudly (an unexpected error is exit 1); the
    checks before it (``PredictConfig.validate``, the output paths) still run."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("scoring started")

    monkeypatch.setattr(ensemble_mod, "_score_dataset", boom)


# ------------------------------------------------------------------------ unreadable images


def test_missing_images_are_found_before_scoring_and_keep_their_rows(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = trained.ids
    folder = copy_dataset(trained, tmp_path, "miss-first")
    (folder / f"{ids[0]}_red.png").unlink()
    (folder / f"{ids[4]}_yellow.png").unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, probs = out_dir / "submission.csv", out_dir / "probs.csv"
    args = ("predict", "--run", "r1", "--dataset", "miss-first", "--out", out, "--probs", probs)
    res = run_cli(trained.home, *args, *FAST)
    assert res.exit_code == 0, res.output
    assert res.stderr == (
        f"warning: 2 of {N_TEST} samples of 'miss-first' left out (2 without all four image files; "
        f"first: {ids[0]}); their rows in submission.csv get no labels; scoring the other 8\n"
    )
    assert f"Scored 8 of {N_TEST} images" in res.stdout and "2 left out" in res.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["probs.csv", "submission.csv"]
    rows = read_rows(out)  # every Id, in the file's order (Kaggle wants them all)
    assert rows[0] == ["Id", "Predicted"] and [r[0] for r in rows[1:]] == ids
    assert rows[1][1] == "" and rows[5][1] == ""
    assert all(r[1] for k, r in enumerate(rows[1:]) if k not in (0, 4))  # --min-labels 1
    prows = read_rows(probs)
    assert [r[0] for r in prows[1:]] == [i for k, i in enumerate(ids) if k not in (0, 4)]
    # --strict refuses before the model is even loaded: nothing scored, nothing written.
    out.unlink()
    probs.unlink()
    no_scoring(monkeypatch)
    line = one_line_error(run_cli(trained.home, *args, *FAST, "--strict"), 1)
    assert line.startswith(f"error: 2 of {N_TEST} samples of 'miss-first' left out")
    assert "--strict" in line and "hpatool datasets verify miss-first" in line
    assert list(out_dir.iterdir()) == []


def test_unreadable_headers_are_found_before_scoring_and_bodies_while_scored(
    trained: Trained, tmp_path: Path
) -> None:
    ids = trained.ids
    folder = copy_dataset(trained, tmp_path, "several-bad")
    (folder / f"{ids[0]}_green.png").write_bytes(b"not a png")  # corrupt first image
    (folder / f"{ids[3]}_yellow.png").unlink()  # missing channel
    blue = folder / f"{ids[7]}_blue.png"
    blue.write_bytes(blue.read_bytes()[: blue.stat().st_size // 2])  # header fine, body cut
    out = tmp_path / "submission.csv"
    res = run_cli(
        trained.home,
        "predict",
        "--run",
        "r1",
        "--dataset",
        "several-bad",
        "--out",
        out,
        *FAST,
    )
    assert res.exit_code == 1, res.output
    warning, error = res.stderr.strip().split("\n")
    assert warning.startswith(
        f"warning: 2 of {N_TEST} samples of 'several-bad' left out "
        "(1 with an unreadable image file, 1 without all four image files; "
        f"first: {folder / ids[0]}_green.png: "
    )
    # an image that is there but cannot be read fails the command, found before scoring (its
    # header) or while scored (its body); an image that is not there is only left out
    assert error.startswith(f"error: 2 of {N_TEST} images could not be scored ({ids[0]}: ")
    assert f"{ids[7]}: " in error
    assert not out.exists()
    failures = read_rows(tmp_path / "submission.failures.csv")
    assert failures[0] == ["Id", "error"] and [r[0] for r in failures[1:]] == [ids[0], ids[7]]
    assert all(r[1] for r in failures[1:])
    rows = read_rows(tmp_path / "submission.partial.csv")
    assert [r[0] for r in rows[1:]] == [i for i in ids if i not in (ids[0], ids[7])]
    assert rows[3][1] == ""  # ids[3], not there: its row, no labels


def test_corrupt_first_image_with_strict_writes_nothing(trained: Trained, tmp_path: Path) -> None:
    ids = trained.ids
    folder = copy_dataset(trained, tmp_path, "strict-bad")
    (folder / f"{ids[0]}_red.png").write_bytes(b"\x89PNG garbage")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = run_cli(
        trained.home,
        "predict",
        "--run",
        "r1",
        "--dataset",
        "strict-bad",
        "--out",
        out_dir / "submission.csv",
        "--probs",
        out_dir / "probs.csv",
        "--strict",
        *FAST,
    )
    line = one_line_error(res, 1)
    assert ids[0] in line
    assert list(out_dir.iterdir()) == []


def test_complete_rerun_removes_stale_partial_files(trained: Trained, tmp_path: Path) -> None:
    ids = trained.ids
    folder = copy_dataset(trained, tmp_path, "restored")
    red = folder / f"{ids[0]}_red.png"
    saved = red.read_bytes()
    red.write_bytes(saved[: len(saved) // 2])  # fails while scored: a partial file
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = (
        "predict",
        "--run",
        "r1",
        "--dataset",
        "restored",
        "--out",
        out_dir / "submission.csv",
        "--probs",
        out_dir / "probs.csv",
        *FAST,
    )
    one_line_error(run_cli(trained.home, *args), 1)
    assert (out_dir / "submission.partial.csv").exists()
    red.write_bytes(saved)
    res = run_cli(trained.home, *args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["probs.csv", "submission.csv"]
    assert [r[0] for r in read_rows(out_dir / "submission.csv")[1:]] == ids


# --------------------------------------------------------------- outputs checked before work


def test_bad_output_paths_fail_before_scoring(
    trained_run: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_scoring(monkeypatch)
    home = trained_run.home
    folder = tmp_path / "existing"
    folder.mkdir()
    a_file = tmp_path / "f.csv"
    a_file.write_text("keep\n")
    (tmp_path / "sub").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())

    def predict(*extra: object) -> str:
        res = run_cli(home, "predict", "--run", "r1", "--dataset", "syn", *extra)
        return one_line_error(res, 2)

    assert "is a folder" in predict("--out", folder)
    assert "is a file, not a folder" in predict("--out", a_file / "sub.csv")
    assert "is a file, not a folder" in predict(
        "--out", tmp_path / "ok.csv", "--probs", a_file / "p.csv"
    )
    same = tmp_path / "same.csv"
    assert "is the --out file" in predict("--out", same, "--probs", same)
    also_same = tmp_path / "sub" / ".." / "same.csv"
    assert "is the --out file" in predict("--out", same, "--probs", also_same)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(folder.iterdir()) == [] and a_file.read_text() == "keep\n"


@pytest.mark.parametrize("name", ["f1.txt", "f1"])
def test_evaluate_plot_needs_a_picture_extension(
    trained_run: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    no_scoring(monkeypatch)
    res = run_cli(
        trained_run.home,
        "evaluate",
        "--run",
        "r1",
        "--dataset",
        "syn",
        "--plot",
        tmp_path / name,
    )
    line = one_line_error(res, 2)
    assert "--plot" in line and "unknown picture format" in line and ".png" in line
    assert list(tmp_path.iterdir()) == []


def test_evaluate_plot_png_and_svg(trained_run: Workspace, tmp_path: Path) -> None:
    for name in ("f1.png", "f1.svg"):
        res = run_cli(
            trained_run.home,
            "evaluate",
            "--run",
            "r1",
            "--dataset",
            "syn",
            "--plot",
            tmp_path / name,
            *FAST,
        )
        assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "f1.png") as img:
        assert img.format == "PNG"
    assert "<svg" in (tmp_path / "f1.svg").read_text()


@pytest.mark.parametrize("name", ["x.txt", "x"])
def test_stats_plot_needs_a_picture_extension(
    trained_run: Workspace, tmp_path: Path, name: str
) -> None:
    res = run_cli(trained_run.home, "stats", "syn", "--plot", tmp_path / name)
    assert "unknown picture format" in one_line_error(res, 2)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ threshold source


def test_last_checkpoint_uses_its_own_thresholds(trained_run: Workspace, tmp_path: Path) -> None:
    run_dir = trained_run.run_dir
    best = load_checkpoint(run_dir / "checkpoint-best.pt")
    last = load_checkpoint(run_dir / "checkpoint-last.pt")
    doc = json.loads((run_dir / "thresholds.json").read_text())
    # the best epoch's centre-crop thresholds; "thresholds" are tuned on the OOF view
    assert doc["tuned_on"] == "oof"
    assert doc["validation_thresholds"] == pytest.approx(best["thresholds"])
    with Registry.open(trained_run.home) as reg:
        src_last = resolve_source(reg, None, run_dir / "checkpoint-last.pt")
        src_run = resolve_source(reg, "r1", None)
    assert src_last.thresholds_file == run_dir / "thresholds.json"
    assert src_run.checkpoint == run_dir / "checkpoint-best.pt"
    # the OOF-view thresholds win over the best checkpoint's own (per-epoch) ones
    got_best = resolve_thresholds("auto", src_run, best)
    assert got_best.tolist() == pytest.approx(doc["thresholds"])
    got = resolve_thresholds("auto", src_last, last)
    # checkpoint-last.pt of a later epoch keeps its own; of the best epoch, the OOF ones
    same_epoch = last["epoch"] == doc["epoch"]
    assert got.tolist() == pytest.approx(doc["thresholds"] if same_epoch else last["thresholds"])
    # Whatever thresholds.json beside it says, the checkpoint's own thresholds win.
    other = ModelSource(run_dir / "checkpoint-last.pt", None, tmp_path / "thresholds.json")
    (tmp_path / "thresholds.json").write_text(json.dumps({"thresholds": [0.01] * 28}))
    assert resolve_thresholds("auto", other, last).tolist() == pytest.approx(last["thresholds"])
    assert resolve_thresholds("auto", other, {}).tolist() == pytest.approx([0.01] * 28)
    assert resolve_thresholds("0.3", other, last).tolist() == [0.3] * 28

    # End to end: a copy of checkpoint-last.pt beside a thresholds.json that says 0.999
    # everywhere; the submission follows the checkpoint's thresholds.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run_dir / "checkpoint-last.pt", copy / "checkpoint-last.pt")
    (copy / "thresholds.json").write_text(json.dumps({"thresholds": [0.999] * 28}))
    out, probs = tmp_path / "s.csv", tmp_path / "p.csv"
    res = run_cli(
        trained_run.home,
        "predict",
        "--checkpoint",
        copy / "checkpoint-last.pt",
        "--dataset",
        "syn",
        "--out",
        out,
        "--probs",
        probs,
        "--min-labels",
        "0",
        *FAST,
    )
    assert res.exit_code == 0, res.output
    p = np.array([[float(v) for v in r[1:]] for r in read_rows(probs)[1:]])
    submitted = [[int(v) for v in r[1].split()] for r in read_rows(out)[1:]]
    thresholds = np.asarray(last["thresholds"])
    assert submitted == [decide_labels(row, thresholds, 0) for row in p]
    assert any(submitted)  # so the 0.999 of thresholds.json (no labels) would differ
    assert submitted != [decide_labels(row, np.full(28, 0.999), 0) for row in p]


@pytest.mark.parametrize(
    "values", [[1.5] + [0.5] * 27, [-0.1] + [0.5] * 27, [math.nan] * 28, [math.inf] * 28]
)
def test_bad_thresholds_json_is_a_data_error(
    trained_run: Workspace, tmp_path: Path, values: list[float]
) -> None:
    run_dir = trained_run.run_dir
    doc = load_checkpoint(run_dir / "checkpoint-best.pt")
    del doc["thresholds"]
    ck_dir = tmp_path / "ck"
    ck_dir.mkdir()
    save_checkpoint(ck_dir / "model.pt", doc)
    (ck_dir / "thresholds.json").write_text(json.dumps({"thresholds": values}))
    src = ModelSource(ck_dir / "model.pt", None, ck_dir / "thresholds.json")
    with pytest.raises(DataError, match=r"must lie in 0\.\.1"):
        resolve_thresholds("auto", src, doc)
    out = tmp_path / "s.csv"
    res = run_cli(
        trained_run.home,
        "predict",
        "--checkpoint",
        ck_dir / "model.pt",
        "--dataset",
        "syn",
        "--out",
        out,
        *FAST,
    )
    line = one_line_error(res, 1)
    assert "thresholds.json" in line and "thresholds must lie in 0..1" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_no_thresholds_anywhere_asks_for_a_number(trained_run: Workspace, tmp_path: Path) -> None:
    run_dir = trained_run.run_dir
    doc = load_checkpoint(run_dir / "checkpoint-best.pt")
    del doc["thresholds"]
    save_checkpoint(tmp_path / "model.pt", doc)
    res = run_cli(
        trained_run.home,
        "predict",
        "--checkpoint",
        tmp_path / "model.pt",
        "--dataset",
        "syn",
        "--out",
        tmp_path / "s.csv",
        *FAST,
    )
    assert "no tuned thresholds" in one_line_error(res, 2)
    assert not (tmp_path / "s.csv").exists()


# --------------------------------------------------------------- evaluate's default fold


def test_evaluate_checkpoint_defaults_to_the_runs_fold(
    trained_run: Workspace, tmp_path: Path
) -> None:
    run_dir = trained_run.run_dir
    with Registry.open(trained_run.home) as reg:
        folds = reg.folds("syn")
        n_all = len(reg.samples("syn"))
    fold_size = sum(1 for f in folds.values() if f == FOLD)
    assert 0 < fold_size < n_all
    assert json.loads((run_dir / "config.json").read_text())["options"]["fold"] == FOLD

    def evaluate(checkpoint: Path) -> dict[str, object]:
        res = run_cli(
            trained_run.home,
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--dataset",
            "syn",
            "--json",
            *FAST,
        )
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    doc = evaluate(run_dir / "checkpoint-best.pt")
    assert doc["fold"] == FOLD and doc["samples"] == fold_size
    # Without config.json beside it, a bare checkpoint is evaluated on every labelled sample.
    shutil.copy(run_dir / "checkpoint-best.pt", tmp_path / "checkpoint-best.pt")
    doc = evaluate(tmp_path / "checkpoint-best.pt")
    assert doc["fold"] is None and doc["samples"] == n_all


# ------------------------------------------------------------------------------- row order


def test_submission_keeps_a_shuffled_files_order(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    res = run_cli(
        trained.home,
        "predict",
        "--run",
        "r1",
        "--dataset",
        "te",
        "--out",
        out,
        *FAST,
    )
    assert res.exit_code == 0, res.output
    rows = read_rows(out)
    assert rows[0] == ["Id", "Predicted"]
    assert [r[0] for r in rows[1:]] == trained.ids
    assert not (tmp_path / "submission.partial.csv").exists()
    assert not (tmp_path / "submission.failures.csv").exists()


# ------------------------------------------------------------------------ foreign checkpoints


def _garbage(path: Path, run_dir: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(4096))


def _empty(path: Path, run_dir: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, run_dir: Path) -> None:
    data = (run_dir / "checkpoint-best.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_pickle(path: Path, run_dir: Path) -> None:
    import torch

    torch.save({"where": Path("/tmp"), "format": "hpatool-checkpoint"}, path)


@pytest.mark.parametrize("make", [_garbage, _empty, _truncated, _foreign_pickle])
def test_unreadable_checkpoint_is_one_line_without_weights_only_advice(
    trained_run: Workspace, tmp_path: Path, make: Callable[[Path, Path], None]
) -> None:
    ck = tmp_path / "bad.pt"
    make(ck, trained_run.run_dir)
    out = tmp_path / "s.csv"
    for command in ("predict", "evaluate"):
        extra = ("--out", out) if command == "predict" else ()
        res = run_cli(
            trained_run.home,
            command,
            "--checkpoint",
            ck,
            "--dataset",
            "syn",
            *extra,
            *FAST,
        )
        line = one_line_error(res, 1)
        assert str(ck) in line and "weights_only" not in line.lower(), line
        assert "unexpected" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


# ------------------------------------------------------------------------ Typer range errors


@pytest.mark.parametrize(
    "args",
    [
        ("predict", "--crops", "0"),
        ("predict", "--min-labels", "29"),
        ("predict", "--min-labels", "-1"),
        ("predict", "--batch-size", "0"),
        ("predict", "--workers", "-1"),
        ("evaluate", "--crops", "0"),
        ("evaluate", "--batch-size", "0"),
    ],
)
def test_out_of_range_options_are_one_line(
    cli: Invoke, tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = ("--out", tmp_path / "s.csv") if args[0] == "predict" else ()
    res = cli(*args, "--run", "r1", "--dataset", "te", *out)
    line = one_line_error(res, 2)
    assert args[1] in line and "╭" not in res.output
    assert not (tmp_path / "s.csv").exists()
