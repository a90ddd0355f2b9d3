"""Stale runs (issue 10): ``runs remove RUN [--files]`` removes a run's registry row and, if
asked, only its own files; SIGHUP (a closed terminal) stops ``train`` as SIGTERM does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpatool.engine.runs.admin import process_info
from hpatool.engine.runs.run_dir import RUN_FILES
from hpatool.registry import Registry
from tests.support import (
    SIZE,
    TRAIN,
    Invoke,
    one_line_error,
    register,
    stop_training_after_first_epoch,
)


def _add_run(
    home: Path, name: str, folder: Path, status: str = "done", config: dict[str, Any] | None = None
) -> None:
    """A run row and a folder holding the files a run writes."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in RUN_FILES:
        (folder / file).write_bytes(b"x")
    (folder / ".tmp-checkpoint-last.pt.abc").write_bytes(b"x")  # a killed save's leftover
    with Registry.open(home) as reg:
        reg.create_run(
            name, arch="resnet10t", datasets=["syn"], fold=0, config=config or {}, out_dir=folder
        )
        reg.update_run(name, status=status)


def _dead_process() -> dict[str, Any]:
    """The ``process`` a run records, of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {**process_info(), "pid": proc.pid}


def _has_run(home: Path, name: str) -> bool:
    with Registry.open(home) as reg:
        return reg.has_run(name)


def test_runs_remove_keeps_the_files_unless_asked(cli: Invoke, home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "a"
    _add_run(home, "a", folder)
    result = cli("runs", "remove", "a")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Removed run a; its files stay in {folder}"
    assert not _has_run(home, "a") and all((folder / f).is_file() for f in RUN_FILES)
    assert "unknown run 'a'" in one_line_error(cli("runs", "remove", "a"), 2)


def test_runs_remove_files_deletes_only_the_run_files(
    cli: Invoke, home: Path, tmp_path: Path
) -> None:
    whole, mixed = tmp_path / "runs" / "whole", tmp_path / "runs" / "mixed"
    _add_run(home, "whole", whole)
    _add_run(home, "mixed", mixed)
    (whole / "tensorboard").mkdir()  # --tensorboard's folder: the run's own
    (whole / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    (mixed / "notes.txt").write_text("mine")
    (mixed / "sub").mkdir()
    (mixed / "tensorboard").mkdir()  # with a file that is not an event file: kept
    (mixed / "tensorboard" / "plot.png").write_bytes(b"x")
    result = cli("runs", "remove", "whole", "--files")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Removed run whole and its folder {whole}"
    assert not whole.exists() and (tmp_path / "runs").is_dir()
    result = cli("runs", "remove", "mixed", "--files")
    assert result.exit_code == 0, result.output
    assert "kept 3 other entries" in result.stdout
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt", "sub", "tensorboard"]
    assert not _has_run(home, "whole") and not _has_run(home, "mixed")


def test_runs_remove_files_refuses_a_folder_that_is_not_a_run(
    cli: Invoke, home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "precious"
    _add_run(home, "p", folder)
    for name in ("config.json", "checkpoint-last.pt", "checkpoint-best.pt"):
        (folder / name).unlink()
    (folder / "data.csv").write_text("keep me")
    line = one_line_error(cli("runs", "remove", "p", "--files"), 2)
    assert "does not look like a run folder" in line
    assert (
        _has_run(home, "p")
        and (folder / "data.csv").is_file()
        and (folder / "metrics.csv").exists()
    )
    # a run whose folder is already gone is removed
    _add_run(home, "gone", tmp_path / "gone")
    for path in (tmp_path / "gone").iterdir():
        path.unlink()
    (tmp_path / "gone").rmdir()
    assert cli("runs", "remove", "gone", "--files").exit_code == 0
    assert not _has_run(home, "gone")


def test_runs_remove_refuses_a_running_run_without_force(
    cli: Invoke, home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "runs" / "r"
    _add_run(home, "r", folder, status="running")
    line = one_line_error(cli("runs", "remove", "r", "--files"), 2)
    assert (
        line == "error: run 'r' is running; stop it first, or pass --force if its process is gone"
    )
    assert _has_run(home, "r") and folder.is_dir()
    result = cli("runs", "remove", "r", "--files", "--force")
    assert result.exit_code == 0, result.output
    assert not _has_run(home, "r") and not folder.exists()


@pytest.mark.slow
def test_sighup_ends_the_run_interrupted_and_resumable(
    synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    stopped = stop_training_after_first_epoch(synth_data, tmp_path, signal.SIGHUP)
    assert stopped.returncode == 129, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        "error: hung up (SIGHUP): run 't' stopped; continue the run with "
        "'hpatool train --resume --name t'"
    )
    assert "Traceback" not in stopped.stderr
    with Registry.open(stopped.home) as reg:
        assert reg.run("t").status == "interrupted"


def test_a_dead_running_run_is_removed_without_force(
    cli: Invoke, home: Path, tmp_path: Path
) -> None:
    _add_run(home, "dead", tmp_path / "dead", "running", {"process": _dead_process()})
    _add_run(home, "alive", tmp_path / "alive", "running", {"process": process_info()})
    assert "is running" in one_line_error(cli("runs", "remove", "alive"), 2)
    assert cli("runs", "remove", "dead", "--files").exit_code == 0
    assert not _has_run(home, "dead") and not (tmp_path / "dead").exists()


def test_a_dead_run_without_a_checkpoint_can_be_started_again(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    register(cli, synth_data(24, SIZE, seed=1), folds=2)
    out = tmp_path / "runs"
    with Registry.open(home) as reg:  # a run whose process was killed before its first epoch
        reg.create_run(
            "t", arch="resnet10t", datasets=["syn"], fold=0, config={"process": process_info()},
            out_dir=out / "t",
        )  # fmt: skip
    args = ("train", "--dataset", "syn", *TRAIN, "--workers", "0", "--max-steps", "1")
    line = one_line_error(cli(*args, "--out", out, "--name", "t"), 2)
    assert "already exists" in line  # its process (this one) is alive
    resume = ("train", "--resume", "--name", "t", "--out", out)
    assert "it is still running" in one_line_error(cli(*resume), 2)
    with Registry.open(home) as reg:
        reg.update_run("t", config={"process": _dead_process()})
    line = one_line_error(cli(*resume), 2)
    assert "start it again without --resume (the same --name may be used)" in line
    result = cli(*args, "--out", out, "--name", "t")
    assert result.exit_code == 0, result.output
    with Registry.open(home) as reg:
        record = reg.run("t")
    assert record.status == "stopped" and record.config["process"]["pid"] == process_info()["pid"]
    assert "process" not in json.loads((out / "t" / "config.json").read_text())
