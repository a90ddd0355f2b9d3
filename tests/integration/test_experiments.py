"""``hpatool cv`` end to end on synthetic data, then ``experiments list``/``show`` on its result:
one run per fold, out-of-fold predictions covering every sample exactly once, the OOF macro F1
equal to scikit-learn's on the oof.csv files with the reported thresholds, a rerun that skips
the finished folds, and ``train --experiment`` refusing another dataset or a taken fold
(issue 12)."""

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

from hpatool.labels import NUM_CLASSES
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, one_line_error, run_cli

CV = (*TRAIN, "--epochs", "1", "--workers", "0", "--eval-crops", "2")


@dataclass
class Done:
    home: Path
    runs: Path
    data: Path
    result: Result


@pytest.fixture(scope="module")
def done(synth_data: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Done:
    """A 3-fold ``cv`` of 24 synthetic samples (experiment ``ex``), once for the module."""
    tmp = tmp_path_factory.mktemp("cv")
    home, runs = tmp / "home", tmp / "runs"
    data = synth_data(24, SIZE, seed=3)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "3"),
        ("datasets", "add", "other", "--labels", data / "labels.csv", "--root", data),
        ("split", "other", "--folds", "3"),
    ):
        assert run_cli(home, *args).exit_code == 0
    result = run_cli(home, "cv", "--dataset", "syn", "--name", "ex", *CV, "--out", runs)
    assert result.exit_code == 0, result.output
    return Done(home, runs, data, result)


def _label_ids(labels: Path) -> list[str]:
    with labels.open(newline="") as fh:
        return [row["Id"] for row in csv.DictReader(fh)]


def test_cv_trains_one_run_per_fold_and_oof_covers_every_sample_once(done: Done) -> None:
    out = done.result.stdout
    assert "fold 0 (1/3, run ex-f0)" in out and "fold 2 (3/3, run ex-f2)" in out
    assert "OOF macro F1" in out and "over 24 of 24 labelled samples of syn" in out
    with Registry.open(done.home) as reg:
        runs = reg.experiment_runs("ex")
        folds = reg.folds("syn")
        assert reg.experiment("ex").datasets == ["syn"]
    assert [(r.name, r.fold, r.experiment, r.status) for r in runs] == [
        (f"ex-f{k}", k, "ex", "done") for k in range(3)
    ]
    seen: list[str] = []
    for r in runs:
        assert r.out_dir == done.runs / r.name
        with (r.out_dir / "oof.csv").open(newline="") as fh:
            ids = [row["Id"] for row in csv.DictReader(fh)]
        assert ids and all(folds[i] == r.fold for i in ids)  # its own validation fold only
        seen += ids
    assert sorted(seen) == sorted(_label_ids(done.data / "labels.csv"))  # each exactly once


def test_experiments_show_json_oof_f1_equals_sklearns(done: Done) -> None:
    result = run_cli(done.home, "experiments", "show", "ex", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["name"] == "ex" and doc["dataset"] == "syn" and doc["folds_missing"] == []
    assert [(r["name"], r["fold"]) for r in doc["runs"]] == [(f"ex-f{k}", k) for k in range(3)]
    with Registry.open(done.home) as reg:
        best = {r.name: r.best_f1 for r in reg.runs()}
        targets = {s.id: s.target for s in reg.samples("syn")}
    assert all(r["best_f1"] == best[r["name"]] for r in doc["runs"])
    assert doc["oof_samples"] == doc["dataset_samples"] == 24
    thresholds = np.array(doc["thresholds"])
    assert thresholds.shape == (NUM_CLASSES,)
    # the oof.csv files, read independently, with the reported thresholds
    ids, rows = [], []
    for r in doc["runs"]:
        with (done.runs / r["name"] / "oof.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                ids.append(row["Id"])
                rows.append([float(row[str(c)]) for c in range(NUM_CLASSES)])
    y = np.zeros((len(ids), NUM_CLASSES), dtype=int)
    for i, sid in enumerate(ids):
        y[i, list(targets[sid] or ())] = 1
    pred = np.array(rows) >= thresholds
    from sklearn.metrics import f1_score

    expected = f1_score(y, pred, average="macro", zero_division=0)
    assert doc["oof_macro_f1"] == pytest.approx(expected, abs=1e-12)
    assert len(doc["classes"]) == NUM_CLASSES
    assert [c["support"] for c in doc["classes"]] == y.sum(axis=0).tolist()
    assert all(v["crops"] == 2 and v["crop"] == 32 for v in doc["views"].values())


def _oof_files(
    done: Done, runs: list[dict[str, object]]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Each row's fold, labels and probabilities, read from the runs' oof.csv files."""
    with Registry.open(done.home) as reg:
        targets = {s.id: s.target for s in reg.samples("syn")}
    folds, labels, rows = [], [], []
    for r in runs:
        with (done.runs / str(r["name"]) / "oof.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                folds.append(int(r["fold"]))  # type: ignore[call-overload]
                y = np.zeros(NUM_CLASSES, dtype=int)
                y[list(targets[row["Id"]] or ())] = 1
                labels.append(y)
                rows.append([float(row[str(c)]) for c in range(NUM_CLASSES)])
    return folds, np.array(labels), np.array(rows)


def test_heldout_oof_f1_equals_a_recomputation_from_the_files(done: Done) -> None:
    """The held-out figure: each fold's oof.csv thresholded with the thresholds reported for
    it, all folds scored together; those thresholds are tuned on the other folds only."""
    from sklearn.metrics import f1_score

    from hpatool.engine.metrics import tune_thresholds

    doc = json.loads(run_cli(done.home, "experiments", "show", "ex", "--json").stdout)
    held = doc["heldout_thresholds"]
    assert sorted(held) == ["0", "1", "2"] and all(len(v) == NUM_CLASSES for v in held.values())
    folds, y, probs = _oof_files(done, doc["runs"])
    fold = np.array(folds)
    pred = np.zeros_like(y, dtype=bool)
    for k, thresholds in held.items():
        pred[fold == int(k)] = probs[fold == int(k)] >= np.array(thresholds)
        others = fold != int(k)
        assert np.array_equal(np.array(thresholds), tune_thresholds(y[others], probs[others]))
    expected = f1_score(y, pred, average="macro", zero_division=0)
    assert doc["oof_macro_f1_heldout"] == pytest.approx(expected, abs=1e-12)
    assert [c["f1"] for c in doc["heldout_classes"]] == pytest.approx(
        f1_score(y, pred, average=None, zero_division=0).tolist(), abs=1e-12
    )
    # the in-sample figure stays, under its old key and labelled
    assert doc["oof_macro_f1"] == doc["oof_macro_f1_in_sample"]
    shown = run_cli(done.home, "experiments", "show", "ex").stdout
    assert f"OOF macro F1 {doc['oof_macro_f1_heldout']:.4f} held out" in " ".join(shown.split())
    listed = json.loads(run_cli(done.home, "experiments", "list", "--json").stdout)
    assert listed[0]["oof_macro_f1_heldout"] == doc["oof_macro_f1_heldout"]
    cv_line = " ".join(done.result.stdout.split())
    assert f"OOF macro F1 {doc['oof_macro_f1_heldout']:.4f} held out" in cv_line


def test_an_experiment_of_one_fold_has_no_heldout_figure(done: Done, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(done.home, home)
    for run in ("ex-f1", "ex-f2"):
        assert run_cli(home, "runs", "remove", run).exit_code == 0
    doc = json.loads(run_cli(home, "experiments", "show", "ex", "--json").stdout)
    assert 0 < doc["oof_samples"] < 24 and doc["oof_macro_f1"] is not None
    assert doc["oof_macro_f1_heldout"] is None and doc["heldout_thresholds"] is None
    assert "one fold" in doc["heldout_note"]
    shown = " ".join(run_cli(home, "experiments", "show", "ex").stdout.split())
    assert "in sample" in shown and "no held-out figure: one fold" in shown


def test_experiments_list_and_show_tables_and_plot(done: Done, tmp_path: Path) -> None:
    listed = run_cli(done.home, "experiments", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "ex" and row["runs"] == ["ex-f0", "ex-f1", "ex-f2"]
    assert row["oof_samples"] == 24 and 0 <= row["oof_macro_f1"] <= 1
    plot = tmp_path / "ex.png"
    shown = run_cli(done.home, "experiments", "show", "ex", "--plot", plot)
    assert shown.exit_code == 0, shown.output
    assert "ex-f2" in shown.stdout and "Nucleoplasm" in shown.stdout
    assert "mean over the grid of 32 px windows" in shown.stdout
    assert f"Plot written to {plot}" in shown.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli(done.home, "experiments", "show", "nope")
    assert "no experiment 'nope'" in one_line_error(bad)
    refused = run_cli(done.home, "experiments", "show", "ex", "--plot", tmp_path / "x.bmpx")
    assert refused.exit_code == 2 and not (tmp_path / "x.bmpx").exists()


def test_an_experiment_without_oof_files_says_so(done: Done, tmp_path: Path) -> None:
    home = tmp_path / "copy"
    shutil.copytree(done.home, home)
    with Registry.open(home) as reg:
        reg.create_experiment("empty", datasets=["syn"])
    listed = run_cli(home, "experiments", "list")
    assert listed.exit_code == 0 and "note: empty: no OOF predictions yet" in listed.stdout
    shown = run_cli(home, "experiments", "show", "empty")
    assert shown.exit_code == 0 and "no OOF predictions yet" in shown.stdout
    assert "folds without a run: 0, 1, 2" in shown.stdout
    doc = json.loads(run_cli(home, "experiments", "show", "empty", "--json").stdout)
    assert doc["thresholds"] is None and doc["oof_macro_f1"] is None
    assert doc["not_out_of_fold"] == []
    assert '"thresholds" is null' in run_cli(home, "experiments", "show", "--help").stdout


def test_cv_rerun_skips_finished_folds_and_refuses_other_options(done: Done) -> None:
    before = {p: p.stat().st_mtime_ns for p in done.runs.rglob("*") if p.is_file()}
    again = run_cli(done.home, "cv", "--name", "ex", "--json")
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert [(r["name"], r["action"]) for r in doc["runs"]] == [
        (f"ex-f{k}", "skip") for k in range(3)
    ]
    assert doc["oof_samples"] == 24 and len(doc["thresholds"]) == NUM_CLASSES
    assert {p: p.stat().st_mtime_ns for p in done.runs.rglob("*") if p.is_file()} == before
    text = run_cli(done.home, "cv", "--name", "ex", "--fold", "1")
    assert "fold 1 (1/1, run ex-f1): already done" in text.stdout
    lr = run_cli(done.home, "cv", "--name", "ex", "--lr", "0.1")
    assert "--lr 0.1 differs from the 0.003 of experiment 'ex'" in one_line_error(lr)
    other = run_cli(done.home, "cv", "--name", "ex", "--dataset", "other")
    assert "--dataset other differs from the syn of experiment 'ex'" in one_line_error(other)


def test_train_experiment_refuses_another_dataset_or_a_taken_fold(done: Done) -> None:
    base = ("train", *TRAIN, "--epochs", "1", "--workers", "0", "--out", done.runs)
    other = run_cli(done.home, *base, "--dataset", "other", "--experiment", "ex", "--fold", "0")
    assert one_line_error(other) == (
        "error: experiment 'ex' holds folds of dataset 'syn', not 'other'; give --dataset syn "
        "first, or another --experiment"
    )
    taken = run_cli(
        done.home, *base, "--dataset", "syn", "--experiment", "ex", "--fold", "1", "--name", "x"
    )
    assert one_line_error(taken).startswith(
        "error: experiment 'ex' already has fold 1: run 'ex-f1'; choose another --fold"
    )
    with Registry.open(done.home) as reg:
        assert not reg.has_run("x") and len(reg.experiment_runs("ex")) == 3


def test_train_experiment_refuses_other_options_and_an_empty_experiment_takes_them(
    done: Done, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "copy"
    shutil.copytree(done.home, home)
    assert run_cli(home, "runs", "remove", "ex-f2").exit_code == 0  # its files stay
    base = ("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0")
    crop = run_cli(home, *base, "--experiment", "ex", "--fold", "2", "--crop", "40")
    assert one_line_error(crop) == (
        "error: --crop 40 differs from the 32 of experiment 'ex'; give --crop 32, as the "
        "experiment's other folds, or another --experiment"
    )
    # an experiment left without runs (a cv that failed early) takes the new run's options
    with Registry.open(home) as reg:
        assert not reg.has_run("ex-f2")
        reg.create_experiment("fresh", datasets=["other"], options={"arch": "resnet18"})
    monkeypatch.chdir(tmp_path)
    fold0 = run_cli(
        home, *base, "--experiment", "fresh", "--fold", "0", "--eval-crops", "1",
        "--max-steps", "1", "--out", "runs",
    )  # fmt: skip
    assert fold0.exit_code == 0, fold0.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from hpatool.engine.training.cv import plan_cv

    with Registry.open(home) as reg:
        fresh = reg.experiment("fresh")
        plan = plan_cv(reg, {}, name="fresh", fold_list=[1])
    assert fresh.datasets == ["syn"] and fresh.options["arch"] == TRAIN[1]
    assert fresh.options["out"] == str(tmp_path / "runs")  # absolute: not the cwd's "runs"
    assert plan.options["out"] == str(tmp_path / "runs")


def test_experiments_list_names_a_corrupt_oof_csv(done: Done) -> None:
    oof = done.runs / "ex-f1" / "oof.csv"
    kept = oof.read_bytes()
    try:
        oof.write_text("Id,0\nx,1\n")
        listed = run_cli(done.home, "experiments", "list")
        assert listed.exit_code == 0, listed.output
        assert f"note: ex: {oof}, line 1: not an oof.csv" in listed.stdout.replace("\n", "")
        (row,) = json.loads(run_cli(done.home, "experiments", "list", "--json").stdout)
        assert row["runs"] == ["ex-f0", "ex-f1", "ex-f2"] and "not an oof.csv" in row["problem"]
        shown = run_cli(done.home, "experiments", "show", "ex")
        assert f"{oof}, line 1: not an oof.csv" in one_line_error(shown, 1)
    finally:
        oof.write_bytes(kept)
