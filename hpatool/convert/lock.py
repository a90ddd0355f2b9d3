"""An advisory lock on an output folder, so that two runs cannot write into it at once.

``download-external`` and ``preprocess`` hold :func:`output_lock` on their ``--out`` folder for
the whole run: a second run into the same folder would delete the first one's ``.part`` files
and replace its ``failures.csv``. The lock is ``fcntl.flock`` on ``<out>/.hpatool-lock``, held
by the open file: the kernel releases it when the process ends, however it ends, so the lock of
a dead (even ``kill -9``-ed) run is simply taken over. The file holds the holder's pid, host,
command and start time, for the message the second run prints.

Shards of one download (``--shard I/N``) may write into one folder at once: each takes the
folder lock shared and its own ``<out>/.hpatool-lock-shard-I-of-N`` exclusively, so a run of the
same shard, or an unsharded run, is refused while the others go on.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hpatool.errors import HpaToolError, WorkFailed

LOCK_FILE = ".hpatool-lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no locking
    fcntl = None  # type: ignore[assignment]


class FolderBusy(HpaToolError):
    """Another live run holds the output folder (exit 1)."""


def _holder(path: Path) -> str:
    """Who holds the lock of ``path``, from its file: "pid N on HOST, COMMAND since TIME"."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"pid {int(info['pid'])} on {info['host']} ({info['command']}, started "
            f"{info['started']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _take(path: Path, exclusive: bool) -> IO[str] | None:
    """The open lock file ``path`` locked (``exclusive`` or shared), or None if it is held."""
    assert fcntl is not None
    try:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's life
    except OSError as exc:  # a read-only folder or file system, no permission
        raise WorkFailed(
            f"{path.parent}: cannot create its lock file {path.name} "
            f"({exc.strerror or exc}); the output folder must be writable: give another --out, "
            "or make it writable"
        ) from None
    try:
        fcntl.flock(fh.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    except BaseException:
        fh.close()
        raise
    return fh


def _write_info(fh: IO[str], command: str) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(info) + "\n")
        fh.flush()


def _busy(out: Path, held: Path, command: str) -> FolderBusy:
    return FolderBusy(
        f"{out} is in use by {_holder(held)}; wait for that run to finish (or stop it), or "
        f"give this {command} another --out"
    )


def _shard_holder(out: Path) -> Path:
    """A shard lock file of ``out`` that a live shard run holds, else the folder lock file."""
    for path in sorted(out.glob(f"{LOCK_FILE}-shard-*")):
        fh = _take(path, exclusive=True)
        if fh is None:
            return path
        fh.close()
    return out / LOCK_FILE


@contextlib.contextmanager
def output_lock(out: Path, command: str, shard: str | None = None) -> Iterator[None]:
    """Hold the lock of the output folder ``out`` (which exists) for the block, or raise
    ``FolderBusy`` naming the run that holds it. ``shard`` ("I/N"): hold the folder lock
    shared and this shard's lock exclusively (other shards may run into ``out`` at once)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    main = out / LOCK_FILE
    with contextlib.ExitStack() as stack:
        fh = _take(main, exclusive=shard is None)
        if fh is None:
            raise _busy(out, main if shard is not None else _shard_holder(out), command)
        stack.callback(fh.close)
        if shard is None:
            _write_info(fh, command)
        else:
            index, _, count = shard.partition("/")
            own = out / f"{LOCK_FILE}-shard-{index}-of-{count}"
            shard_fh = _take(own, exclusive=True)
            if shard_fh is None:
                raise _busy(out, own, command)
            stack.callback(shard_fh.close)
            _write_info(shard_fh, f"{command} --shard {shard}")
        yield
