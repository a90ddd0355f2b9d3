"""The training state <-> checkpoint mapping (``engine.training.state``) and the run folder's
metrics
file (``engine.runs.run_dir``), on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hpatool.data.sampling import WeightedEpochSampler
from hpatool.engine.runs.run_dir import METRIC_COLUMNS, RunDir, write_metrics_csv
from hpatool.engine.training.optim import create_optimizer, create_scheduler
from hpatool.engine.training.state import TrainObjects, TrainState
from hpatool.errors import UsageError

CHECKPOINT_KEYS = {
    "model", "optimizer", "scheduler", "scaler", "epoch", "step", "step_in_epoch",
    "epoch_loss_sum", "steps_per_epoch", "rng", "sampler", "config", "model_spec", "best_f1",
    "best_epoch", "thresholds", "metrics", "history", "arch", "timm_name",
}  # fmt: skip


def _objects(seed: int = 0, world_size: int = 1) -> TrainObjects:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    optimizer = create_optimizer(model, 1e-2, 0.01)
    return TrainObjects(
        model=model,
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, 20),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sampler=WeightedEpochSampler(np.ones(8), seed=1, world_size=world_size),
    )


def _step(objects: TrainObjects) -> None:
    loss = objects.model(torch.randn(2, 4)).sum()
    objects.optimizer.zero_grad()
    loss.backward()
    objects.optimizer.step()
    objects.scheduler.step()


CONFIG = {
    "options": {"arch": "tiny"},
    "timm_name": "tiny_timm",
    "steps_per_epoch": 4,
    "model_spec": {"arch": "tiny", "crop": 8},
}


def test_finish_epoch_and_record() -> None:
    state = TrainState()
    assert not state.finish_epoch(0, 3, 1.5, steps_per_epoch=4)  # stopped in its middle
    assert (state.epoch, state.step, state.step_in_epoch, state.epoch_loss_sum) == (0, 3, 3, 1.5)
    assert state.finish_epoch(0, 1, 2.0, steps_per_epoch=4)
    assert (state.epoch, state.step, state.step_in_epoch, state.epoch_loss_sum) == (1, 4, 0, 0.0)
    assert state.record({"epoch": 1, "macro_f1": 0.2})
    assert not state.record({"epoch": 2, "macro_f1": 0.1})
    assert state.record({"epoch": 2, "macro_f1": 0.3})  # the row of epoch 2 is replaced
    assert [r["epoch"] for r in state.history] == [1, 2]
    assert (state.best_f1, state.best_epoch) == (0.3, 2)


def test_checkpoint_round_trip_restores_objects_counters_and_rng(tmp_path: Path) -> None:
    objects = _objects()
    for _ in range(3):
        _step(objects)
    state = TrainState(epoch=0, step=3, step_in_epoch=3, epoch_loss_sum=0.75, best_f1=0.5,
                       best_epoch=1, history=[{"epoch": 1, "macro_f1": 0.5}])  # fmt: skip
    doc = state.to_checkpoint(objects, CONFIG, thresholds=[0.5] * 3, metrics={"epoch": 1})
    assert set(doc) == CHECKPOINT_KEYS
    assert (doc["arch"], doc["timm_name"], doc["steps_per_epoch"]) == ("tiny", "tiny_timm", 4)
    assert doc["model_spec"] == CONFIG["model_spec"] and doc["config"] is CONFIG
    torch.save(doc, tmp_path / "c.pt")
    expected = (torch.rand(1).item(), np.random.rand(), random.random())  # after the capture

    restored = _objects(seed=1)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    again = TrainState.restore(loaded, restored, name="r", arch="tiny", world_size=1)
    assert again == state
    weights, loaded_weights = objects.model.state_dict(), restored.model.state_dict()
    assert all(torch.equal(weights[k], loaded_weights[k]) for k in weights)
    assert restored.scheduler.state_dict()["last_epoch"] == 3
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected


def test_restore_refuses_another_world_size_in_the_middle_of_an_epoch() -> None:
    objects = _objects(world_size=2)
    doc = TrainState(step=1, step_in_epoch=1).to_checkpoint(
        objects, CONFIG, thresholds=[], metrics={}
    )
    with pytest.raises(UsageError, match="with 2 processes; resume it with as many"):
        TrainState.restore(doc, _objects(), name="r", arch="tiny", world_size=1)


def test_restore_names_the_arch_a_checkpoint_does_not_fit() -> None:
    doc = TrainState().to_checkpoint(_objects(), CONFIG, thresholds=[], metrics={})
    other = _objects()
    other.model = nn.Linear(5, 3)
    with pytest.raises(UsageError, match="checkpoint of run 'r' does not fit --arch big"):
        TrainState.restore(doc, other, name="r", arch="big", world_size=1)


def test_metrics_csv_keeps_its_format(tmp_path: Path) -> None:
    rows = [
        {"epoch": 1, "step": 3, "partial": 0, "train_loss": 0.123456789, "val_loss": 1 / 3,
         "macro_f1": 0.5, "macro_f1_in_sample": 0.625, "macro_f1_at_0.5": 1e-7, "lr": 0.0005,
         "images_per_s": 12345678.9,
         "seconds": 2.0, "extra": "ignored"},
        {"epoch": 2, "step": 5, "partial": 1, "train_loss": float("nan")},
    ]  # fmt: skip
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, rows)
    assert path.read_text() == (
        ",".join(METRIC_COLUMNS) + "\n"
        "1,3,0,0.123457,0.333333,0.5,0.625,1e-07,0.0005,1.23457e+07,2,\n"
        "2,5,1,nan,,,,,,,,\n"
    )


def test_run_dir_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.write_config({"options": {"arch": "tiny"}})
    run.write_thresholds([0.3] * 28, {"macro_f1": 0.4, "macro_f1_at_0.5": 0.2}, epoch=3)
    assert list(run.files()) == ["config.json", "thresholds.json"]
    doc = json.loads(run.thresholds.read_text())
    assert (doc["epoch"], doc["checkpoint"], len(doc["class_names"])) == (
        3,
        "checkpoint-best.pt",
        28,
    )
