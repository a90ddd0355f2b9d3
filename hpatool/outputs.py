"""The one check of an output path, made before any work starts.

Every option that names a file hpatool will write (``predict --out/--probs``, ``evaluate
--plot``, ``stats --plot``, ``show --out``, ``datasets verify --failures``, a run's folder) goes
through :func:`check_output`: the path must be writable as a file (not a folder, not below a
file, in a folder this user can create files in) and must not be a file that hpatool reads and
must never lose: the registry (and its ``-wal`` / ``-shm`` / ``-journal`` files), a registered
dataset's label CSV or one of its channel images, or one of the command's own inputs.
Each refusal is one ``UsageError`` line (exit 2) naming the option, the file and what it is.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hpatool._io import check_output_file, figure_file
from hpatool.errors import UsageError
from hpatool.registry import Registry

#: What the registry's files are called beside ``registry.sqlite``: SQLite's companions.
REGISTRY_COMPANIONS = ("", "-wal", "-shm", "-journal")

_CHANNEL_NAME = re.compile(r"^.+_(red|green|blue|yellow)\.(png|jpg|jpeg|tif|tiff)$", re.I)

#: ``(path, what it is)``: a command's own input files, e.g. ``(config, "the --config file")``.
Inputs = Iterable[tuple[str | Path | None, str]]


def check_output(
    path: str | Path, option: str, reg: Registry | None = None, inputs: Inputs = ()
) -> Path:
    """``path`` (``~`` expanded) if ``option`` may write it; else a one-line ``UsageError``."""
    target = check_output_file(path, option)
    _check_not_protected(target, option, reg, inputs)
    check_writable(target, option)
    return target


def check_figure(
    path: str | Path, option: str, reg: Registry | None = None, inputs: Inputs = ()
) -> Path:
    """:func:`check_output` for a picture: its extension must also be a known format."""
    target = figure_file(path, option)
    _check_not_protected(target, option, reg, inputs)
    check_writable(target, option)
    return target


def check_writable(target: Path, option: str) -> None:
    """Prove, by creating and removing a file, that ``target``'s folder (or the nearest folder
    above it that exists: the missing ones are created when written) takes new files. A
    permission bit check would not do: it says nothing on a read-only mount and root ignores it.
    """
    folder = next((p for p in target.absolute().parents if p.exists()), Path("/"))
    try:
        _probe(folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"{option} {target}: cannot write in {folder} ({reason}); give a path in a "
            "writable folder"
        ) from None


def _probe(folder: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".hpatool-probe-", dir=folder)
    os.close(fd)
    os.unlink(name)


def _check_not_protected(target: Path, option: str, reg: Registry | None, inputs: Inputs) -> None:
    for path, what in inputs:
        if path is not None and _same_file(target, Path(path).expanduser()):
            raise UsageError(f"{option} {target} is {what}; write the output to another file")
    if reg is None:
        return
    for suffix in REGISTRY_COMPANIONS:
        if _same_file(target, Path(f"{reg.path}{suffix}")):
            raise UsageError(
                f"{option} {target} is hpatool's registry ({reg.path}); write the output to "
                "another file"
            )
    for record in reg.datasets():
        if record.labels_path and _same_file(target, Path(record.labels_path)):
            raise UsageError(
                f"{option} {target} is the label CSV of dataset {record.name!r}; write the "
                "output to another file"
            )
        if record.root is not None and _is_channel_file_under(target, record.root):
            raise UsageError(
                f"{option} {target} is an image of dataset {record.name!r} (a channel file in "
                f"its folder {record.root}); write the output to another file"
            )


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _same_file(a: Path, b: Path) -> bool:
    """The same file: one path after links are followed, or one inode (a hard link)."""
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def _is_channel_file_under(target: Path, root: Path) -> bool:
    return _CHANNEL_NAME.match(target.name) is not None and _resolved(target).is_relative_to(
        _resolved(root)
    )
