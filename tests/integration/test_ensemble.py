"""Ensembles and views in ``predict``/``evaluate``: ``--run A --run B`` (and ``--experiment``)
average their models' probabilities and use thresholds tuned on the runs' out-of-fold
predictions; the view stored with a run's thresholds is the default, another one is one warning
line; ``--tta`` says what it does; and a class predicted far more often than in training is one
warning line at the end of ``predict``."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import Result

from hpatool.engine.runs.oof import summarize_oof
from hpatool.engine.scoring.score import decide_labels
from hpatool.registry import Registry
from hpatool.synth import synth_dataset
from tests.support import TRAIN, run_cli

SIZE = 32
N = 24
CPU = ("--device", "cpu", "--workers", "0")
VIEW = "max of 2 crops of 24px"  # the runs' stored view: --crop 24 --eval-crops 2


def read_probs(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def warnings_of(res: Result) -> list[str]:
    """The warning lines, less the one about predicted class frequencies: models trained for
    two steps predict most classes far more often than they occur (see the last test)."""
    drift = "warning: predicted class frequencies far from the training data's"
    return [line for line in res.stderr.splitlines() if not line.startswith(drift)]


def read_labels(path: Path) -> list[list[int]]:
    with path.open(newline="") as fh:
        return [[int(v) for v in r[1].split()] for r in list(csv.reader(fh))[1:]]


@dataclass(frozen=True)
class Setup:
    home: Path
    runs: Path


#: The probabilities of ``--run r0 --run r1`` (seed 3), once for the module.
ENSEMBLE_PROBS: list[np.ndarray] = []


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 1-epoch resnet10t runs on folds 0 and 1 of a 24-sample synthetic dataset, crop 24,
    their view 2 crops (max): each writes its oof.csv and OOF-tuned thresholds.json. Made once
    for the module: each test gets a copy (``setup``)."""
    base = tmp_path_factory.mktemp("ensemble")
    home, data, runs = base / "home", base / "syn", base / "runs"
    synth_dataset(data, samples=N, size=SIZE, seed=21)
    steps = [
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "3"),
    ]
    for fold in (0, 1):
        steps.append(
            ("train", "--dataset", "syn", *TRAIN, "--crop", "24", "--eval-crops", "2",
             "--tta", "crops", "--eval-agg", "max",
             "--epochs", "1", "--fold", fold, "--workers", "0", "--out", runs,
             "--name", f"r{fold}")
        )  # fmt: skip
    for args in steps:
        res = run_cli(home, *args)
        assert res.exit_code == 0, (args, res.output)
    return base


@pytest.fixture
def setup(trained: Path, workspace_copy: Callable[[Path], Path]) -> Setup:
    """A private copy of the module's registry, runs and images."""
    base = workspace_copy(trained)
    return Setup(base / "home", base / "runs")


def predict(setup: Setup, tmp_path: Path, name: str, *args: object) -> tuple[Result, Path, Path]:
    out, probs = tmp_path / f"{name}.csv", tmp_path / f"{name}-probs.csv"
    res = run_cli(
        setup.home, "predict", "--dataset", "syn", "--out", out, "--probs", probs, "--seed", "3",
        *CPU, *args,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return res, out, probs


def test_an_ensemble_is_the_mean_of_its_runs(setup: Setup, tmp_path: Path) -> None:
    res0, _, p0 = predict(setup, tmp_path, "r0", "--run", "r0")
    _, _, p1 = predict(setup, tmp_path, "r1", "--run", "r1")
    res, out, pe = predict(setup, tmp_path, "both", "--run", "r0", "--run", "r1")
    assert warnings_of(res0) == warnings_of(res) == []  # each run's own view: no warning
    assert f"({VIEW}) with {setup.runs / 'r0' / 'checkpoint-best.pt'}" in res0.stdout
    assert f"({VIEW}) with ensemble of 2 models (r0, r1)" in res.stdout
    ids0, probs0 = read_probs(p0)
    ids1, probs1 = read_probs(p1)
    ids, probs = read_probs(pe)
    assert ids == ids0 == ids1 and len(ids) == N
    np.testing.assert_allclose(probs, (probs0 + probs1) / 2, rtol=0, atol=1e-6)
    ENSEMBLE_PROBS[:] = [probs]
    # --threshold auto: tuned on both runs' out-of-fold predictions together
    with Registry.open(setup.home) as reg:
        thresholds = summarize_oof(reg, [reg.run("r0"), reg.run("r1")]).thresholds
    assert read_labels(out) == [decide_labels(p, thresholds, 1) for p in probs]


def test_experiment_is_an_ensemble_of_its_runs(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def experiment_runs(self: Registry, name: str) -> list[object]:
        assert name == "cv1"
        return [self.run("r0"), self.run("r1")]

    monkeypatch.setattr(Registry, "experiment_runs", experiment_runs)
    res, _, pe = predict(setup, tmp_path, "exp", "--experiment", "cv1")
    assert "with ensemble of 2 models (r0, r1)" in res.stdout
    if not ENSEMBLE_PROBS:  # run on its own
        _, _, pr = predict(setup, tmp_path, "runs", "--run", "r0", "--run", "r1")
        ENSEMBLE_PROBS[:] = [read_probs(pr)[1]]
    assert read_probs(pe)[1].tolist() == ENSEMBLE_PROBS[0].tolist()


def test_a_run_without_oof_uses_the_mean_thresholds_with_a_warning(
    setup: Setup, tmp_path: Path
) -> None:
    (setup.runs / "r1" / "oof.csv").unlink()  # of this test's copy
    res, out, pe = predict(setup, tmp_path, "both", "--run", "r0", "--run", "r1")
    assert warnings_of(res) == [
        "warning: r1 has no oof.csv: the ensemble uses the mean of its models' own thresholds, "
        "not thresholds tuned on out-of-fold predictions ('hpatool train --resume --name RUN' "
        "writes the file)"
    ]
    mean = np.mean(
        [
            json.loads((setup.runs / r / "thresholds.json").read_text())["thresholds"]
            for r in ("r0", "r1")
        ],
        axis=0,
    )
    assert read_labels(out) == [decide_labels(p, mean, 1) for p in read_probs(pe)[1]]


def test_evaluate_an_ensemble(setup: Setup) -> None:
    from sklearn.metrics import f1_score

    from hpatool.engine.config import PredictConfig
    from hpatool.engine.scoring.evaluate import evaluate_run

    res = run_cli(
        setup.home, "evaluate", "--run", "r0", "--run", "r1", "--dataset", "syn", "--json", *CPU
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["models"] == ["r0", "r1"] and doc["fold"] is None and doc["samples"] == N
    assert doc["scoring"] == VIEW and doc["trained_on"] > 0
    assert "in the training set of at least one of the ensemble's 2 models" in res.stderr
    with Registry.open(setup.home) as reg:
        config = PredictConfig(dataset="syn", run=["r0", "r1"], device="cpu", workers=0, fold=2)
        report = evaluate_run(reg, config)
    assert report.fold == 2 and report.y_true is not None and report.y_pred is not None
    expected = f1_score(report.y_true, report.y_pred, average="macro", zero_division=0)
    assert report.macro_f1 == pytest.approx(expected, abs=1e-12)
    one = run_cli(setup.home, "evaluate", "--run", "r0", "--dataset", "syn", "--json", *CPU)
    assert json.loads(one.stdout)["fold"] == 0  # one run: its own validation fold


# ------------------------------------------------------------------------- views and warnings


def test_stored_view_is_the_default_and_another_is_one_warning(
    setup: Setup, tmp_path: Path
) -> None:
    doc = json.loads((setup.runs / "r0" / "thresholds.json").read_text())
    assert doc["view"] == {"crop": 24, "crops": 2, "agg": "max", "tta": "crops"}
    res, out, probs = predict(
        setup, tmp_path, "other", "--run", "r0", "--crops", "3", "--agg", "mean"
    )
    assert warnings_of(res) == [
        f"warning: thresholds were tuned on {VIEW}; scoring with mean of 3 crops of 24px: pass "
        "--threshold with a number, or the run's view"
    ]
    thresholds = np.asarray(doc["thresholds"])  # the OOF-view ones, not the checkpoint's
    assert read_labels(out) == [decide_labels(p, thresholds, 1) for p in read_probs(probs)[1]]
    res, _, _ = predict(setup, tmp_path, "num", "--run", "r0", "--crops", "3", "--threshold", "0.5")
    assert warnings_of(res) == []  # a number: no tuned view to differ from


def test_tta_modes_say_what_they_do(setup: Setup, tmp_path: Path) -> None:
    res, _, _ = predict(setup, tmp_path, "f", "--run", "r0", "--tta", "flips", "--crops", "4")
    assert (
        "(max of 4 windows of 24px covering the 32x32 image, each under 4 flips/rotations "
        "(16 views))" in res.stdout
    )
    assert "warning: thresholds were tuned on max of 2 crops of 24px; scoring with" in res.stderr
    res, _, _ = predict(setup, tmp_path, "g", "--run", "r0", "--tta", "grid", "--threshold", "0.5")
    assert "(max of 4 windows of 24px covering the 32x32 image)" in res.stdout
    res, _, _ = predict(setup, tmp_path, "c1", "--run", "r0", "--crops", "1", "--threshold", "0.5")
    assert "(the centre crop of 24px)" in res.stdout
    res, _, w = predict(
        setup, tmp_path, "w", "--run", "r0", "--crop-size", "32", "--tta", "crops+flips",
        "--threshold", "0.5",
    )  # fmt: skip
    assert "(max of 2 flips/rotations of the whole 32px image)" in res.stdout
    res, _, one = predict(
        setup, tmp_path, "w1", "--run", "r0", "--crop-size", "32", "--threshold", "0.5"
    )
    assert "(1 window of 32px (the whole image))" in res.stdout
    # max over the identity and one rotation is at least the identity alone
    assert (read_probs(w)[1] >= read_probs(one)[1] - 1e-6).all()


def test_a_class_predicted_far_more_often_than_in_training_is_one_warning(
    setup: Setup, tmp_path: Path
) -> None:
    src = setup.runs / "r0"
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("checkpoint-best.pt", "config.json", "thresholds.json"):
        shutil.copy(src / name, copy / name)
    args = ("--checkpoint", copy / "checkpoint-best.pt", "--min-labels", "0")
    # first, a training frequency equal to what the model predicts: no warning
    _, out, _ = predict(setup, tmp_path, "base", *args)
    shares = np.array([sum(c in lab for lab in read_labels(out)) / N for c in range(28)])
    config = json.loads((copy / "config.json").read_text())
    assert len(config["class_frequency"]) == 28  # written by training
    config["class_frequency"] = shares.tolist()
    (copy / "config.json").write_text(json.dumps(config))
    res, _, _ = predict(setup, tmp_path, "same", *args)
    assert res.stderr == ""
    # then one class's threshold at 0.02, as a class with one validation positive used to get
    rare = int(np.argmin(shares))
    doc = json.loads((copy / "thresholds.json").read_text())
    doc["thresholds"][rare] = 0.02
    (copy / "thresholds.json").write_text(json.dumps(doc))
    res, out, _ = predict(setup, tmp_path, "drift", *args)
    share = sum(rare in lab for lab in read_labels(out)) / N
    assert share > 3 * shares[rare] and share - shares[rare] >= 0.05
    from hpatool.labels import CLASS_NAMES

    assert res.stderr == (
        f"warning: predicted class frequencies far from the training data's, of {N} images: "
        f"{rare} {CLASS_NAMES[rare]} {100 * share:.1f}% (training {100 * shares[rare]:.1f}%); "
        "check the thresholds (thresholds.json; an ensemble's are tuned on its runs' oof.csv) "
        "or pass --threshold 0.5\n"
    )
    # a run without class_frequency (trained before it was written): no warning
    del config["class_frequency"]
    (copy / "config.json").write_text(json.dumps(config))
    res, _, _ = predict(setup, tmp_path, "old", *args)
    assert res.stderr == ""
