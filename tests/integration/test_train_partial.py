"""Training on a partly present dataset (issue 10, item 1): samples whose images are not there
(a partial download, a deleted file) are left out, counted by reason in the output and in
``config.json``; ``--strict`` refuses a partial validation fold; ``split`` splits the samples
that are there; a split made again refuses a resume; and ``--tensorboard`` and the validation
progress events of the same runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.availability import FILES_MISSING, NOT_FETCHED, usable_samples
from hpatool.engine.training.events import TrainEvent
from hpatool.engine.training.fit import fit
from hpatool.registry import Registry
from tests.support import ARCH, SIZE, TRAIN, Invoke, one_line_error

QUICK = (*TRAIN, "--epochs", "1", "--workers", "0")


@pytest.fixture
def partial(synth_data: Callable[..., Path], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of a 32-sample synthetic dataset with one channel file deleted from 3 samples."""
    data = tmp_path / "data"
    shutil.copytree(synth_data(32, SIZE, seed=3), data)
    ids = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    gone = ids[1:4]
    for sample_id, colour in zip(gone, ("red", "green", "yellow"), strict=True):
        (data / f"{sample_id}_{colour}.png").unlink()
    return data, gone


def test_train_leaves_out_samples_without_images_and_records_the_counts(
    cli: Invoke, home: Path, partial: tuple[Path, list[str]], tmp_path: Path
) -> None:
    data, gone = partial
    assert cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data)
    split = cli("split", "syn", "--folds", "2")
    assert split.exit_code == 0, split.output
    assert "29 samples" in split.stdout and "Left out 3 samples" in split.stdout
    with Registry.open(home) as reg:
        folds = reg.folds("syn")
    assert len(folds) == 29 and not set(gone) & set(folds)  # no fold for the missing ones

    runs = tmp_path / "runs"
    result = cli("train", "--dataset", "syn", *QUICK, "--out", runs, "--name", "p")
    assert result.exit_code == 0, result.output
    assert "3 samples of 'syn' left out: 3 without all four image files" in result.output
    config = json.loads((runs / "p" / "config.json").read_text())
    assert config["left_out"] == {"syn": {FILES_MISSING: 3}}
    assert config["train_samples"] + config["val_samples"] == 29


def test_the_registry_status_decides_for_downloaded_datasets_and_strict_refuses(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    """A dataset whose samples carry statuses (as download-external writes them): only
    ``done`` samples are used, the rest counted by status, even though their files exist; a
    validation sample left out is an error with --strict only."""
    data = synth_data(32, SIZE, seed=3)
    assert cli("datasets", "add", "dl", "--labels", data / "labels.csv", "--root", data)
    assert cli("split", "dl", "--folds", "2", "--all-samples").exit_code == 0
    with Registry.open(home) as reg:
        samples = reg.samples("dl")
        folds = reg.folds("dl")
        statuses = ["done"] * len(samples)
        statuses[0], statuses[1], statuses[2] = "failed", "failed", None
        reg.set_status("dl", [(s.id, st) for s, st in zip(samples, statuses, strict=True)])
        usable = usable_samples(reg, "dl")
    assert len(usable.samples) == 29
    assert usable.left_out == {"failed to download or convert": 2, NOT_FETCHED: 1}
    val_fold = folds[samples[0].id]

    runs = tmp_path / "runs"
    args = ("train", "--dataset", "dl", *QUICK, "--fold", val_fold, "--out", runs)
    strict = cli(*args, "--name", "s", "--strict")
    line = one_line_error(strict, 1)
    assert f"validation fold {val_fold} of 'dl' have no images" in line and "--strict" in line
    assert not (runs / "s").exists()
    with Registry.open(home) as reg:
        assert not reg.has_run("s")

    seen: list[TrainEvent] = []
    result = fit(
        {"datasets": ["dl"], "arch": ARCH, "crop": 32, "batch_size": 8, "device": "cpu",
         "workers": 0, "epochs": 1, "fold": val_fold, "out": runs, "name": "ok",
         "tensorboard": True},
        home=home,
        progress=seen.append,
    )  # fmt: skip
    assert result.status == "done"
    config = json.loads((runs / "ok" / "config.json").read_text())
    assert config["left_out"]["dl"] == {"failed to download or convert": 2, NOT_FETCHED: 1}
    assert config["val_left_out"] == sum(1 for s in samples[:3] if folds[s.id] == val_fold)
    # validation reports its progress, up to every validation sample
    val = [e for e in seen if e.kind == "validate"]
    assert val[0].val_done == 0 and val[-1].val_done == val[-1].val_total == config["val_samples"]
    # --tensorboard wrote the epoch's scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs / "ok" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/macro_f1_heldout", "val/macro_f1_tuned", "lr"} <= tags
    f1 = events.Scalars("val/macro_f1_heldout")  # the held-out figure picks the best epoch
    assert len(f1) == 1 and f1[0].value == pytest.approx(result.best_f1, abs=1e-6)


def test_a_resume_after_the_dataset_was_split_again_is_refused(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    """Split again with the same --folds and --seed (as after more images arrived), the folds
    are others: the run's validation fold has changed and --resume says so."""
    data = synth_data(32, SIZE, seed=3)
    assert cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data)
    assert cli("split", "syn", "--folds", "2").exit_code == 0
    runs = tmp_path / "runs"
    args = ("train", "--dataset", "syn", *TRAIN, "--workers", "0", "--out", runs)
    first = cli(*args, "--epochs", "2", "--max-steps", "1", "--name", "r")
    assert first.exit_code == 0, first.output
    # the split's time is stored to the second: a re-split within the same second as the
    # first (a fast machine: the run above takes under a second) would look like the same one
    import time

    time.sleep(1.05)
    assert cli("split", "syn", "--folds", "2").exit_code == 0
    again = cli("train", "--resume", "--name", "r", "--out", runs)
    line = one_line_error(again, 2)
    assert "was re-split since run 'r' started" in line and "start a new run" in line


def test_tensorboard_without_the_package_is_refused_before_the_run(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import importlib.util

    data = synth_data(32, SIZE, seed=3)
    assert cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data)
    assert cli("split", "syn", "--folds", "2").exit_code == 0
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a),
    )
    runs = tmp_path / "runs"
    result = cli("train", "--dataset", "syn", *QUICK, "--out", runs, "--name", "t", "--tensorboard")
    line = one_line_error(result, 2)
    assert "pip install 'hpatool[tensorboard]'" in line
    assert not (runs / "t").exists()
    with Registry.open(home) as reg:
        assert not reg.has_run("t")
