"""A full disk while writing a checkpoint, a submission or any other file: one line that says the
disk is full, names the file and says how to go on; what was there before is kept (issue 9).
The disk is made full by making the writes fail with ENOSPC, as the kernel does."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hpatool._io import DiskFull, atomic_path, write_csv
from hpatool.engine.models import checkpoint as ckpt_mod
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, leftovers, one_line_error, run_cli

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


class FullDiskFile(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, path: Any, mode: str, room: int) -> None:
        super().__init__(path, mode)
        self.room = room

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if size > self.room:
            raise OSError(errno.ENOSPC, FULL)
        self.room -= size
        return super().write(data)


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, nth: int = 1, room: int = 100) -> None:
    """From the ``nth`` checkpoint written on, the disk is full after ``room`` bytes of it."""
    calls = 0

    def fake_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if "w" not in mode:
            return open(path, mode, *args, **kwargs)
        calls += 1
        if calls < nth:
            return open(path, mode, *args, **kwargs)
        return FullDiskFile(path, mode, room)

    monkeypatch.setattr(ckpt_mod, "open", fake_open, raising=False)


# ----------------------------------------------------------------------------- the writers


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    write_csv(target, ["a"], [[1]])
    with pytest.raises(DiskFull) as info, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, FULL)
    assert str(info.value) == (
        f"disk full: could not write {target} ({FULL}); nothing was replaced: free some space, "
        "then run the command again"
    )
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "a\n1\n" and leftovers(tmp_path) == []


def test_checkpoint_save_on_a_full_disk_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch reports a failed write as ``RuntimeError: ... unexpected pos``; the errno behind it
    is what counts."""
    path = tmp_path / "checkpoint-last.pt"
    ckpt_mod.save_checkpoint(path, {"weights": torch.zeros(4)})
    before = path.read_bytes()
    fill_disk_at(monkeypatch)
    with pytest.raises(DiskFull) as info:
        ckpt_mod.save_checkpoint(path, {"weights": torch.ones(10_000)})
    assert str(info.value) == (
        f"disk full: could not write {path} ({FULL}); nothing was replaced: free some space, "
        "then run the command again"
    )
    assert path.read_bytes() == before and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- commands


@pytest.fixture
def registered(synth_data: Callable[..., Path], tmp_path: Path) -> Path:
    home = tmp_path / "home"
    data = synth_data(16, SIZE, seed=6)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
    ):
        assert run_cli(home, *args).exit_code == 0
    return home


def test_train_disk_full_keeps_the_last_epoch_and_resumes(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    args = ("train", "--dataset", "syn", *TRAIN, "--workers", "0", "--out", runs, "--name", "r")
    # Epoch 1 writes checkpoint-last.pt and checkpoint-best.pt; epoch 2's save fills the disk.
    fill_disk_at(monkeypatch, nth=3)
    res = run_cli(registered, *args, "--epochs", "2")
    last = runs / "r" / "checkpoint-last.pt"
    assert one_line_error(res, 1) == (
        f"error: disk full: could not write {last} ({FULL}); nothing was replaced: free some "
        # trained with --home: the advice names it (a plain command would look elsewhere)
        f"space, then continue the run with 'hpatool --home {registered} train --resume "
        "--name r'"
    )
    assert ckpt_mod.load_checkpoint(last)["epoch"] == 1 and leftovers(runs) == []
    with Registry.open(registered) as reg:
        assert reg.run("r").status == "failed"
    monkeypatch.undo()
    res = run_cli(registered, "train", "--resume", "--name", "r", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert ckpt_mod.load_checkpoint(last)["epoch"] == 2
    with Registry.open(registered) as reg:
        assert reg.run("r").status == "done"


def test_train_disk_full_before_any_epoch_says_start_again(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    fill_disk_at(monkeypatch)
    res = run_cli(
        registered, "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
        "--out", runs, "--name", "r0",
    )  # fmt: skip
    assert one_line_error(res, 1) == (
        f"error: disk full: could not write {runs / 'r0' / 'checkpoint-last.pt'} ({FULL}); "
        "nothing was replaced: free some space, then start run 'r0' again with the same "
        "command (no epoch of it was saved)"
    )
    assert leftovers(runs) == []


def test_predict_disk_full_names_the_submission(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    res = run_cli(
        registered, "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--max-steps", "1",
        "--eval-crops", "1", "--workers", "0", "--out", runs, "--name", "r1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / "submission.csv"
    out.parent.mkdir()
    out.write_text("Id,Predicted\nold,0\n")
    write_text = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith(".tmp-submission.csv"):
            raise OSError(errno.ENOSPC, FULL)
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    res = run_cli(
        registered, "predict", "--run", "r1", "--dataset", "syn", "--out", out,
        "--crops", "1", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert one_line_error(res, 1) == (
        f"error: disk full: could not write {out} ({FULL}); nothing was replaced: free some "
        "space, then run the command again"
    )
    assert out.read_text() == "Id,Predicted\nold,0\n" and leftovers(out.parent) == []
