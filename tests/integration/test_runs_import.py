"""``train --experiment`` on one machine, ``runs import`` of its run folder into another registry
(issue 12): the run, its experiment, best epoch and F1 come along; the refusals are one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, one_line_error, run_cli


def _add(home: Path, data: Path, folds: int | None = 2, seed: int = 0) -> None:
    result = run_cli(
        home, "datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data
    )
    assert result.exit_code == 0, result.output
    if folds:
        result = run_cli(home, "split", "syn", "--folds", str(folds), "--seed", str(seed))
        assert result.exit_code == 0, result.output


def test_a_fold_trained_elsewhere_is_imported_into_its_experiment(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    data = synth_data(16, SIZE, seed=4)
    there, here = tmp_path / "there", tmp_path / "here"
    _add(there, data)
    trained = run_cli(
        there, "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
        "--eval-crops", "2", "--fold", "1", "--experiment", "ex", "--name", "gpu2-f1",
        "--out", tmp_path / "runs",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    with Registry.open(there) as reg:
        original = reg.run("gpu2-f1")
        assert original.experiment == "ex" and original.status == "done"
        assert reg.experiment("ex").datasets == ["syn"]  # created with the run
        assert [r.name for r in reg.experiment_runs("ex")] == ["gpu2-f1"]

    copied = tmp_path / "collected" / "gpu2-f1"
    shutil.copytree(tmp_path / "runs" / "gpu2-f1", copied)
    unknown = run_cli(here, "runs", "import", copied)
    assert "dataset 'syn', which is not in" in one_line_error(unknown)
    _add(here, data)  # the same split: same --folds and --seed
    result = run_cli(here, "runs", "import", copied, "--json")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    doc = json.loads(result.stdout)
    assert doc["experiment_created"] is True
    with Registry.open(here) as reg:
        record = reg.run("gpu2-f1")
        assert reg.experiment("ex").datasets == ["syn"]
        assert reg.experiment("ex").options["out"] == str(copied.parent.absolute())
    assert (record.experiment, record.fold, record.status) == ("ex", 1, "done")
    assert (record.best_f1, record.best_epoch, record.epochs_done) == (
        original.best_f1,
        original.best_epoch,
        1,
    )
    assert record.out_dir == copied.absolute()
    shown = json.loads(run_cli(here, "experiments", "show", "ex", "--json").stdout)
    assert shown["runs"][0]["name"] == "gpu2-f1" and shown["folds_missing"] == [0]
    assert 0 < shown["oof_samples"] < 16 and shown["not_out_of_fold"] == []
    # split again otherwise: the run's oof.csv is no longer its validation fold of this split
    resplit = run_cli(here, "split", "syn", "--folds", "2", "--seed", "7", "--force")
    assert resplit.exit_code == 0, resplit.output
    shown = json.loads(run_cli(here, "experiments", "show", "ex", "--json").stdout)
    assert shown["not_out_of_fold"] == ["gpu2-f1"]
    text = run_cli(here, "experiments", "show", "ex")
    assert text.exit_code == 0, text.output
    assert (
        "runs trained on another split: gpu2-f1; their oof.csv predictions are not out-of-fold "
        "for the current split: retrain them or split as they were"
    ) in text.stdout.replace("\n", " ")

    again = run_cli(here, "runs", "import", copied)
    assert "run 'gpu2-f1' already exists" in one_line_error(again)
    assert "--name NEW" in again.stderr
    twice = run_cli(here, "runs", "import", copied, "--name", "other")
    assert "experiment 'ex' already has fold 1: run 'gpu2-f1'" in one_line_error(twice)
    empty = tmp_path / "empty"
    empty.mkdir()
    not_run = run_cli(here, "runs", "import", empty)
    assert one_line_error(not_run) == f"error: {empty} is not a run folder: it has no config.json"


def test_an_unfinished_run_on_another_split_imports_interrupted_with_a_warning(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    data = synth_data(16, SIZE, seed=4)
    there, here = tmp_path / "there", tmp_path / "here"
    _add(there, data)
    trained = run_cli(
        there, "train", "--dataset", "syn", *TRAIN, "--epochs", "3", "--max-steps", "1",
        "--workers", "0", "--eval-crops", "1", "--name", "lone", "--out", tmp_path / "runs",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    _add(here, data, folds=2, seed=7)
    result = run_cli(here, "runs", "import", tmp_path / "runs" / "lone", "--name", "lone2")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: run 'lone2' was trained on a split of 'syn'")
    assert "not out-of-fold" in result.stderr
    with Registry.open(here) as reg:
        record = reg.run("lone2")
    assert record.status == "interrupted" and record.experiment is None
    assert "Imported run lone2: interrupted" in result.stdout


@pytest.mark.parametrize("what", ["config", "metrics"])
def test_a_folder_missing_a_run_file_is_named(
    synth_data: Callable[..., Path], tmp_path: Path, what: str
) -> None:
    home, folder = tmp_path / "home", tmp_path / "r"
    _add(home, synth_data(16, SIZE, seed=4), folds=None)
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"options": {"name": "r", "datasets": ["syn"], "fold": 0, "epochs": 1}})
        if what == "metrics"
        else "{not json"
    )
    error = one_line_error(run_cli(home, "runs", "import", folder), 2 if what == "metrics" else 1)
    assert ("metrics.csv" if what == "metrics" else "not a run's config.json") in error
