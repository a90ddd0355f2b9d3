"""``hpatool cv``: a cross-validation killed during its second fold finishes the remaining folds
when run again without retraining the first (issue 12), and its refusals are one line each,
before any training."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, one_line_error, run_cli, start_hpatool


def _registered(synth_data: Callable[..., Path], home: Path, folds: int | None) -> Path:
    data = synth_data(16, SIZE, seed=2)
    result = run_cli(
        home, "datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data
    )
    assert result.exit_code == 0, result.output
    if folds:
        assert run_cli(home, "split", "syn", "--folds", str(folds)).exit_code == 0
    return data


@pytest.mark.slow
def test_killing_cv_in_fold_2_and_rerunning_finishes_without_retraining_fold_1(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    home, runs = tmp_path / "home", tmp_path / "runs"
    _registered(synth_data, home, folds=2)
    args = [
        "cv", "--dataset", "syn", "--name", "k", *TRAIN, "--batch-size", "4", "--epochs", "1",
        "--workers", "0", "--eval-crops", "2", "--checkpoint-every", "1", "--out", str(runs),
    ]  # fmt: skip
    proc = start_hpatool(args, home)
    second = runs / "k-f1" / "checkpoint-last.pt"
    deadline = time.monotonic() + 240
    while not second.exists():  # fold 2 has saved its first step
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "fold 2 never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    first = runs / "k-f0"
    kept = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    with Registry.open(home) as reg:
        assert reg.run("k-f0").status == "done"
        assert reg.run("k-f1").status == "running"  # killed: its process is gone
        assert reg.run("k-f1").epochs_done == 0

    again = run_cli(home, "cv", "--name", "k")
    assert again.exit_code == 0, again.output
    out = again.stdout
    assert "fold 0 (1/2, run k-f0): already done" in out
    assert "fold 1 (2/2, run k-f1): resuming (its process is gone)" in out
    assert "Run k-f1 (resumed)" in out and "Run k-f0" not in out
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == kept  # fold 1 untouched
    with Registry.open(home) as reg:
        assert [(r.name, r.status, r.epochs_done) for r in reg.experiment_runs("k")] == [
            ("k-f0", "done", 1),
            ("k-f1", "done", 1),
        ]
    assert "over 16 of 16 labelled samples" in out


def test_cv_refusals_are_one_line_before_any_training(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    home, runs = tmp_path / "home", tmp_path / "runs"
    _registered(synth_data, home, folds=None)
    base = ("cv", "--name", "e", *TRAIN, "--out", runs)
    unsplit = run_cli(home, *base, "--dataset", "syn")
    assert one_line_error(unsplit) == (
        "error: dataset 'syn' has no split; run 'hpatool split syn --folds K' first (cv trains "
        "one run per fold)"
    )
    assert run_cli(home, "split", "syn", "--folds", "2").exit_code == 0
    folds = run_cli(home, *base, "--dataset", "syn", "--folds", "5")
    assert one_line_error(folds) == (
        "error: 'syn' is split into 2 folds; run 'hpatool split syn --folds 5 --force' or "
        "leave out --folds"
    )
    fold = run_cli(home, *base, "--dataset", "syn", "--fold", "2")
    assert "--fold 2: 'syn' is split into 2 folds (0 to 1)" in one_line_error(fold)
    both = run_cli(home, *base, "--dataset", "syn", "--fold", "1", "--folds", "2")
    assert "not both" in one_line_error(both)
    nothing = run_cli(home, *base)
    assert "--dataset" in one_line_error(nothing)
    bad = run_cli(home, "cv", "--name", "a b", "--dataset", "syn")
    assert "invalid experiment name 'a b'" in one_line_error(bad)
    with Registry.open(home) as reg:  # nothing was registered or written
        assert reg.experiments() == [] and reg.runs() == []
    assert not runs.exists()
    # a run of that name that is not a fold of the experiment
    with Registry.open(home) as reg:
        reg.create_run(
            "e-f0", arch="resnet10t", datasets=["syn"], fold=0, config={},
            out_dir=runs / "e-f0",
        )  # fmt: skip
        reg.update_run("e-f0", status="done")
    taken = run_cli(home, *base, "--dataset", "syn", "--json")
    assert "run 'e-f0' exists and is not fold 0 of experiment 'e'" in one_line_error(taken)
    assert json.loads(run_cli(home, "experiments", "list", "--json").stdout) == []


def test_a_cv_that_fails_before_its_first_run_leaves_no_experiment_in_the_way(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    home, runs, empty = tmp_path / "home", tmp_path / "runs", tmp_path / "empty"
    data = _registered(synth_data, home, folds=2)
    empty.mkdir()
    for args in (
        ("datasets", "add", "noimg", "--labels", data / "labels.csv", "--root", empty),
        ("split", "noimg", "--folds", "2"),
    ):
        assert run_cli(home, *args).exit_code == 0
    base = ("cv", "--name", "rh", *TRAIN, "--epochs", "1", "--workers", "0", "--out", runs)
    failed = run_cli(home, *base, "--dataset", "noimg", "--dataset", "syn")
    assert failed.exit_code != 0 and "error:" in failed.stderr
    with Registry.open(home) as reg:
        assert reg.runs() == []
        # one left by an earlier version: a retry with other options is not refused either
        reg.create_experiment("rh", datasets=["noimg", "syn"], options={"arch": "resnet18"})
    retry = run_cli(
        home, *base, "--dataset", "syn", "--fold", "0", "--max-steps", "1", "--eval-crops", "1"
    )
    assert retry.exit_code == 0, retry.output
    assert "fold 0 (1/1, run rh-f0)" in retry.stdout
    with Registry.open(home) as reg:
        stored = reg.experiment("rh")
        assert [r.name for r in reg.experiment_runs("rh")] == ["rh-f0"]
    assert stored.datasets == ["syn"] and stored.options["arch"] == TRAIN[1]
    other = run_cli(home, "cv", "--name", "rh", "--dataset", "noimg", "--dataset", "syn")
    assert "--dataset noimg, syn differs from the syn of experiment 'rh'" in one_line_error(other)
