"""Managing finished or stale runs: ``runs remove`` (the registry row and, if asked, the run's
files), and telling a dead run from a running one. Only the files a run writes are deleted
(``engine.run_dir.RUN_FILES`` and the temporary files of an atomic write), and only from a
folder that holds a run's ``config.json`` or checkpoint; the folder itself goes only when
nothing else is left in it. A training process records its id and host with its run
(``process_info``, in the registry's copy of the configuration), so a run left ``running`` by
a killed process or a closed terminal is known to be dead (``process_gone``) on that host.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpatool.engine.run_dir import BEST, CONFIG_FILE, LAST, RUN_FILES
from hpatool.errors import UsageError
from hpatool.registry import Registry, RunRecord

#: A folder is a run's only if it holds one of these.
_RUN_MARKERS = (CONFIG_FILE, LAST, BEST)


@dataclass
class RemovedRun:
    """What ``remove_run`` did: the run's name, folder, the files deleted and those kept."""

    name: str
    out_dir: Path
    deleted: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    folder_removed: bool = False


def remove_run(reg: Registry, name: str, *, files: bool = False, force: bool = False) -> RemovedRun:
    """Remove run ``name`` from the registry (one transaction) and, with ``files``, its run
    files. A run whose status is ``running`` is refused unless ``force`` (its process is gone)."""
    with reg.transaction():
        record = reg.run(name)
        if record.status == "running" and not force and not process_gone(record):
            raise UsageError(
                f"run {name!r} is running; stop it first, or pass --force if its process is gone"
            )
        removed = RemovedRun(name, record.out_dir)
        if files:
            _check_run_folder(record.out_dir, name)
        reg.delete_run(name)
        if files and record.out_dir.is_dir():
            _delete_run_files(removed)
    return removed


def _check_run_folder(folder: Path, name: str) -> None:
    if not folder.exists():
        return
    if not folder.is_dir() or not any((folder / m).is_file() for m in _RUN_MARKERS):
        raise UsageError(
            f"{folder} does not look like a run folder (no {CONFIG_FILE} or checkpoint); "
            f"not deleting it; remove run {name!r} without --files"
        )


def _delete_run_files(removed: RemovedRun) -> None:
    folder = removed.out_dir
    for path in sorted(folder.iterdir()):
        ours = path.name in RUN_FILES or path.name.startswith(".tmp-")
        if ours and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.deleted.append(path)
        else:
            removed.kept.append(path)
    if not removed.kept:
        folder.rmdir()
        removed.folder_removed = True


def process_info() -> dict[str, Any]:
    """This process, as a run records it: ``{"pid", "host", "started"}`` (its start time in
    clock ticks since boot where ``/proc`` tells it, to tell a reused process id)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid())}


def process_gone(record: RunRecord) -> bool:
    """``True`` if ``record`` says ``running`` but the process that trains it, on this host,
    no longer exists (killed, or its terminal closed before SIGHUP was handled). A run on
    another host, or one that recorded no process, is never known to be dead."""
    process = record.config.get("process")
    if record.status != "running" or not isinstance(process, dict):
        return False
    pid = process.get("pid")
    if process.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = process.get("started")
    return started is not None and _started(pid) not in (None, started)  # a reused id


def _started(pid: int) -> int | None:
    """Process ``pid``'s start time (clock ticks after boot, ``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
