"""``train --checkpoint-every N`` (issue 10): ``checkpoint-last.pt`` is also saved every N steps
inside an epoch, and a run stopped right after such a checkpoint (Ctrl-C, or killed) resumes
from it and ends with the same weights, bit for bit, as a run that was never stopped."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import hpatool.engine.training.epochs as train_mod
from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, Invoke, Workspace, one_line_error, register, start_hpatool

KEEP = ("epoch", "step", "train_loss", "val_loss", "macro_f1", "macro_f1_at_0.5", "lr")


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(40, SIZE, seed=0)


def _assert_same_run(a_dir: Path, b_dir: Path) -> None:
    a = load_checkpoint(a_dir / "checkpoint-last.pt")
    b = load_checkpoint(b_dir / "checkpoint-last.pt")
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert [{k: r[k] for k in KEEP} for r in a["history"]] == [
        {k: r[k] for k in KEEP} for r in b["history"]
    ]


def test_a_run_stopped_after_a_step_checkpoint_resumes_exactly(
    cli: Invoke, full_run: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "full": the same two epochs never stopped, trained once for the session (``full_run``)
    home, out = full_run.home, full_run.runs
    common = ("--dataset", "syn", *TRAIN, "--epochs", "2", "--out", out, "--workers", "0")

    saved: list[dict[str, Any]] = []
    real_save = train_mod.save_checkpoint

    def save_then_stop(path: Path, checkpoint: dict[str, Any]) -> None:
        real_save(path, checkpoint)
        if path.name == "checkpoint-last.pt":
            saved.append(checkpoint)
        if checkpoint["epoch"] == 1 and checkpoint["step_in_epoch"] > 0:
            raise KeyboardInterrupt  # Ctrl-C right after the step checkpoint in epoch 2

    with monkeypatch.context() as patch:
        patch.setattr(train_mod, "save_checkpoint", save_then_stop)
        stopped = cli("train", *common, "--checkpoint-every", "2", "--name", "mid")
    line = one_line_error(stopped, 130)
    assert line.endswith("continue the run with 'hpatool train --resume --name mid'")
    # epoch 1 (3 steps): a step checkpoint at step 2, the epoch's at 3; then step 4 (epoch 2)
    assert [(c["step"], c["step_in_epoch"], c["thresholds"] is None) for c in saved] == [
        (2, 2, True),
        (3, 0, False),
        (4, 1, True),
    ]
    last = load_checkpoint(out / "mid" / "checkpoint-last.pt")
    assert (last["epoch"], last["step"], last["step_in_epoch"]) == (1, 4, 1)
    assert last["config"]["options"]["checkpoint_every"] == 2
    with Registry.open(home) as reg:
        assert reg.run("mid").status == "interrupted"

    resumed = cli("train", "--resume", "--name", "mid")
    assert resumed.exit_code == 0, resumed.output
    _assert_same_run(out / "full", out / "mid")
    with Registry.open(home) as reg:
        assert reg.run("mid").status == "done" and reg.run("mid").epochs_done == 2


def test_checkpoint_every_is_checked(cli: Invoke, home: Path, synth_dir: Path) -> None:
    register(cli, synth_dir)
    line = one_line_error(cli("train", "--dataset", "syn", "--checkpoint-every", "0"), 2)
    assert "--checkpoint-every" in line


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_from_its_step_checkpoint(
    cli: Invoke, full_run: Workspace
) -> None:
    # "full": the same two epochs never stopped, trained once for the session (``full_run``)
    home, out = full_run.home, full_run.runs
    common = ["--dataset", "syn", *TRAIN, "--epochs", "2", "--out", str(out), "--workers", "0"]

    proc = start_hpatool(["train", *common, "--checkpoint-every", "1", "--name", "k"], home)
    last = out / "k" / "checkpoint-last.pt"
    deadline = time.monotonic() + 120
    while not last.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed = load_checkpoint(last)
    assert killed["step"] < 6  # killed before the run's end
    with Registry.open(home) as reg:
        assert reg.run("k").status == "running"  # a killed process cannot say otherwise
    resumed = cli("train", "--resume", "--name", "k")
    assert resumed.exit_code == 0, resumed.output
    _assert_same_run(out / "full", out / "k")
