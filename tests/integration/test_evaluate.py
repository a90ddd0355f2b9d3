"""``hpatool evaluate`` on what a run really validated on: the run's ``--limit``, a warning when
the evaluated samples include its training samples, a partial dataset (samples left out before
scoring, by reason), max and mean from one scoring, and the figure of ``--plot``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from hpatool.engine.scoring import ensemble as ensemble_mod
from hpatool.registry import Registry
from hpatool.synth import synth_dataset
from tests.support import one_line_error, run_cli

SIZE = 48
N = 36
LIMIT = 27
FOLD = 1
FAST = ("--crops", "3", "--device", "cpu", "--workers", "0")


@dataclass(frozen=True)
class Setup:
    home: Path
    data: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch resnet10t run 'r1' on the first 27 of 36 synthetic samples (--limit 27),
    validated on fold 1 of 3, made once for the module: each test gets a copy (``setup``)."""
    base = tmp_path_factory.mktemp("evaluate")
    home, data = base / "home", base / "syn"
    synth_dataset(data, samples=N, size=SIZE, seed=11)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "3"),
        (
            "train",
            "--dataset",
            "syn",
            "--arch",
            "resnet10t",
            "--fold",
            FOLD,
            "--limit",
            LIMIT,
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--crop",
            "32",
            "--eval-crops",  # the run's stored view: the --crops 3 of FAST (no view warning)
            "3",
            "--tta",
            "crops",
            "--eval-agg",
            "max",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--out",
            base / "runs",
            "--name",
            "r1",
        ),
    ):
        res = run_cli(home, *args)
        assert res.exit_code == 0, (args, res.output)
    return base


@pytest.fixture
def setup(trained: Path, workspace_copy: Callable[[Path], Path]) -> Setup:
    """A private copy of the module's registry, run and images."""
    base = workspace_copy(trained)
    return Setup(base / "home", base / "syn")


def folds_of(home: Path, name: str = "syn") -> tuple[list[str], dict[str, int]]:
    with Registry.open(home) as reg:
        return [s.id for s in reg.samples(name)], reg.folds(name)


def evaluate_json(home: Path, *args: object) -> tuple[dict[str, object], str]:
    res = run_cli(home, "evaluate", "--run", "r1", "--json", *FAST, *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_the_runs_limit_and_fold_by_default(setup: Setup) -> None:
    ids, folds = folds_of(setup.home)
    doc, stderr = evaluate_json(setup.home, "--dataset", "syn")
    validated = [i for i in ids[:LIMIT] if folds[i] == FOLD]
    assert (doc["fold"], doc["limit"], doc["samples"]) == (FOLD, LIMIT, len(validated))
    assert len(validated) < sum(1 for i in ids if folds[i] == FOLD)  # the limit really cuts
    assert (doc["trained_on"], doc["left_out"]) == (0, {})
    assert stderr == ""  # the run's own validation samples: nothing to warn about
    res = run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "syn", *FAST)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(
        f"syn fold {FOLD} (the run's --limit {LIMIT}): {len(validated)} images, max of 3 crops"
    )


def test_samples_the_run_trained_on_are_one_warning(setup: Setup) -> None:
    ids, folds = folds_of(setup.home)
    doc, stderr = evaluate_json(setup.home, "--dataset", "syn", "--fold", "0")
    in_fold = [i for i in ids if folds[i] == 0]
    trained = [i for i in ids[:LIMIT] if folds[i] == 0]
    assert 0 < len(trained) < len(in_fold)  # the samples past the limit were not trained on
    assert (doc["fold"], doc["limit"], doc["samples"]) == (0, None, len(in_fold))
    assert doc["trained_on"] == len(trained)
    assert stderr == (
        f"warning: {len(trained)} of the {len(in_fold)} evaluated samples were in run r1's "
        "training set: its scores are optimistic\n"
    )


def test_max_and_mean_from_one_scoring(setup: Setup) -> None:
    both, _ = evaluate_json(setup.home, "--dataset", "syn")
    mean, _ = evaluate_json(setup.home, "--dataset", "syn", "--agg", "mean")
    assert set(both["macro_f1_by_agg"]) == {"max", "mean"}  # type: ignore[arg-type]
    # each aggregation's held-out figure is the same whichever is reported
    assert both["macro_f1_by_agg"] == pytest.approx(mean["macro_f1_by_agg"])  # type: ignore[arg-type]
    assert both["macro_f1_heldout"] == both["macro_f1_by_agg"]["max"]  # type: ignore[index]
    assert mean["macro_f1_heldout"] == mean["macro_f1_by_agg"]["mean"]  # type: ignore[index]


def _probs_csv(path: Path) -> dict[str, list[float]]:
    import csv

    with path.open(newline="") as fh:
        return {row["Id"]: [float(row[str(c)]) for c in range(28)] for row in csv.DictReader(fh)}


def test_each_aggregation_is_tuned_on_its_own_predictions(setup: Setup, tmp_path: Path) -> None:
    """max and mean are each scored with thresholds tuned for that aggregation (held out:
    one half tuned, the other scored, both ways, 5 seeded splittings): recomputed here from
    predict's probabilities of the same view and seed. On the run's own fold the thresholds
    it applies were tuned on the samples it scores, and it says so."""
    import numpy as np

    from hpatool.engine.metrics import heldout_macro_f1
    from hpatool.labels import to_multihot

    doc, _ = evaluate_json(setup.home, "--dataset", "syn")
    ids, folds = folds_of(setup.home)
    scored = [i for i in ids[:LIMIT] if folds[i] == FOLD]
    with Registry.open(setup.home) as reg:
        targets = {s.id: s.target for s in reg.samples("syn")}
    y = to_multihot([targets[i] for i in scored])
    for agg in ("max", "mean"):
        probs = tmp_path / f"{agg}.csv"
        res = run_cli(
            setup.home, "predict", "--run", "r1", "--dataset", "syn", "--agg", agg,
            "--probs", probs, "--out", tmp_path / f"sub-{agg}.csv", *FAST,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        rows = _probs_csv(probs)
        p = np.array([rows[i] for i in scored])
        expected = heldout_macro_f1(y, p)
        assert doc["macro_f1_by_agg"][agg] == pytest.approx(expected, abs=1e-9)  # type: ignore[index]
    # the run's thresholds were tuned on its validation fold: these very samples
    assert doc["tuned_on_scored"] == doc["samples"] and doc["in_sample"] is True
    assert doc["headline"] == doc["macro_f1_heldout"]
    text = " ".join(
        run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "syn", *FAST).stdout.split()
    )
    assert (
        f"they were tuned on {doc['samples']} of the {doc['samples']} samples scored here" in text
    )
    # another fold: the thresholds were not tuned on it
    other, _ = evaluate_json(setup.home, "--dataset", "syn", "--fold", "0")
    assert other["tuned_on_scored"] == 0 and other["in_sample"] is False
    assert other["headline"] == other["macro_f1"]


def test_a_partial_dataset_is_scored_on_what_is_there(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "part"
    shutil.copytree(setup.data, folder)
    res = run_cli(
        setup.home, "datasets", "add", "part", "--labels", folder / "labels.csv", "--root", folder
    )
    assert res.exit_code == 0, res.output
    ids, _ = folds_of(setup.home, "part")
    (folder / f"{ids[2]}_red.png").unlink()
    (folder / f"{ids[5]}_green.png").write_bytes(b"not a png")
    with Registry.open(setup.home) as reg:  # as download-external records them
        reg.set_status("part", [(i, "done") for i in ids])
        reg.set_status("part", [(ids[0], "missing"), (ids[1], "failed")])
    doc, stderr = evaluate_json(setup.home, "--dataset", "part")
    assert doc["samples"] == N - 4 and doc["fold"] is None
    assert doc["left_out"] == {
        "failed to download or convert": 1,
        "without all four image files": 1,
        "missing on the server (404)": 1,
        "with an unreadable image file": 1,
    }
    first, second = stderr.strip().split("\n")
    assert first == (
        f"warning: 4 of {N} samples of 'part' left out (1 failed to download or convert, "
        "1 missing on the server (404), 1 with an unreadable image file, "
        "1 without all four image files; "
        f"first: {ids[0]}); scoring the other {N - 4}"
    )
    # The same images as 'syn': those the run trained on are counted by id.
    assert second.startswith("warning: ") and "were in run r1's training set" in second


def test_nothing_to_score_fails_before_the_model_loads(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(setup.data / "labels.csv", folder / "labels.csv")
    res = run_cli(
        setup.home, "datasets", "add", "gone", "--labels", folder / "labels.csv", "--root", folder
    )
    assert res.exit_code == 0, res.output

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ensemble_mod, "resolve_sources", boom)
    line = one_line_error(run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "gone"), 1)
    assert line.startswith(f"error: none of the samples can be scored: {N} of {N} samples of ")
    assert "without all four image files" in line and "hpatool datasets verify gone" in line


def test_crop_size_the_architecture_cannot_take_is_refused_before_scoring(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpatool.engine.models.input_size
    from hpatool.errors import UsageError

    asked: list[tuple[str, int]] = []

    def too_small(arch: str, crop: int) -> None:  # as for inceptionresnetv2 below 75 px
        asked.append((arch, crop))
        raise UsageError(f"--crop {crop} is too small for {arch}: it needs at least 75 px")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("scoring started")

    monkeypatch.setattr(hpatool.engine.models.input_size, "check_input_size", too_small)
    monkeypatch.setattr(ensemble_mod, "score", boom)
    res = run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "syn", "--crop-size", "16")
    line = one_line_error(res, 2)
    assert asked == [("resnet10t", 16)]
    assert line == (
        "error: --crop-size 16 does not fit the model: --crop 16 is too small for resnet10t: "
        "it needs at least 75 px"
    )


def test_plot_is_one_figure_with_both_aggregations(setup: Setup, tmp_path: Path) -> None:
    plot = tmp_path / "eval.png"
    res = run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "syn", "--plot", plot, *FAST)
    assert res.exit_code == 0, res.output
    assert f"Plot written to {plot}" in res.stdout
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size == (1400, 1000)
