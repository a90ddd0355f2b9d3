"""The one check of an output path, made before any work starts.

Every option that names a file hpatool will write (``predict --out/--probs``, ``evaluate
--plot``, ``stats --plot``, ``show --out``, ``datasets verify --failures``, a run's folder) goes
through :func:`check_output`: the path must be writable as a file (not a folder, not below a
file, in a folder this user can create files in) and must not be a file that hpatool reads and
must never lose: the registry (and its ``-wal`` / ``-shm`` / ``-journal`` files), a registered
dataset's label CSV or one of its channel images, or one of the command's own inputs.
Each refusal is one ``UsageError`` line (exit 2) naming the option, the file and what it is.

Options that name a FOLDER hpatool writes files into (``synth OUT_DIR``, ``preprocess --out``,
``download-external --out``, ``demo --out``) go through :func:`check_output_dir`: the folder must
not be the registry's home, the image folder of a registered dataset other than the command's
own output dataset (whose rerun resumes in it), the folder of a label CSV the command would
write over, or one of the command's own input folders.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hpatool._io import check_output_file, figure_file
from hpatool.errors import HpaToolError, UsageError
from hpatool.registry import REGISTRY_FILE, DatasetRecord, Registry, resolve_home

#: What the registry's files are called beside ``registry.sqlite``: SQLite's companions.
REGISTRY_COMPANIONS = ("", "-wal", "-shm", "-journal")

_CHANNEL_NAME = re.compile(r"^.+_(red|green|blue|yellow)\.(png|jpg|jpeg|tif|tiff)$", re.I)

#: The files a run folder holds that hpatool must never write over from another command: its
#: checkpoints, JSON files (config.json, thresholds.json), metrics.csv, oof.csv and curves.png
#: (``engine.runs.run_dir.RUN_FILES``; tests/unit/test_outdir_checks.py keeps the two in step).
RUN_FILE_NAME = re.compile(r"^(.+\.pt|.+\.json|metrics\.csv|oof\.csv|curves\.png)$")

#: ``(path, what it is)``: a command's own input files, e.g. ``(config, "the --config file")``.
Inputs = Iterable[tuple[str | Path | None, str]]


def check_output(
    path: str | Path,
    option: str,
    reg: Registry | None = None,
    inputs: Inputs = (),
    own_run: str | None = None,
) -> Path:
    """``path`` (``~`` expanded) if ``option`` may write it; else a one-line ``UsageError``.
    ``own_run``: the run whose own files the command writes (train), not refused."""
    target = check_output_file(path, option)
    _check_not_protected(target, option, reg, inputs, own_run)
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


def _check_not_protected(
    target: Path, option: str, reg: Registry | None, inputs: Inputs, own_run: str | None = None
) -> None:
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
    if RUN_FILE_NAME.match(target.name):
        folder = _resolved(target).parent
        for run in reg.runs():
            if run.name != own_run and _resolved(run.out_dir) == folder:
                raise UsageError(
                    f"{option} {target} is a file of run {run.name!r} (its folder "
                    f"{run.out_dir}); write the output to another file"
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


# --------------------------------------------------------------------------- output folders


def check_output_dir(
    path: str | Path,
    option: str,
    reg: Registry | None,
    *,
    own_dataset: str | None = None,
    inputs: Inputs = (),
    writes: Iterable[str] = (),
    clears: bool = False,
) -> Path:
    """``path`` (``~`` expanded, links followed) if ``option`` may write files into it; else a
    one-line ``UsageError``.

    Refused: one of the command's ``inputs`` (folders); the registry's home; the image folder
    of a registered dataset, unless it is also ``own_dataset``'s (the command's own output,
    which a rerun resumes in); the folder of a registered label CSV
    named like a file the command writes there (``writes``). With ``clears`` (the command
    empties the folder first) anything of these *inside* the folder is refused too.
    """
    target = _resolved(Path(path))

    def holds(folder: Path) -> bool:
        return folder == target or (clears and folder.is_relative_to(target))

    for given, what in inputs:
        if given is not None and _resolved(Path(given)) == target:
            raise UsageError(f"{option} {path} is {what}; choose another folder")
    if reg is None:
        return target
    home = _resolved(reg.home)
    if holds(home):
        where = "is" if home == target else f"holds ({home})"
        raise UsageError(
            f"{option} {path} {where} hpatool's registry folder; choose another folder"
        )
    names = set(writes)
    records = reg.datasets()
    own = [r for r in records if r.name == own_dataset]
    if any(folder == target for r in own for folder, _ in _folders_of(r)):
        return target  # the command's own output folder: a rerun resumes in it
    for record in records:
        if record.name == own_dataset:
            continue
        for folder, what in _folders_of(record):
            if holds(folder):
                where = "is" if folder == target else f"holds ({folder})"
                raise UsageError(
                    f"{option} {path} {where} the {what} of registered dataset "
                    f"{record.name!r}; choose another folder"
                )
        labels = _resolved(Path(record.labels_path)) if record.labels_path else None
        if labels is not None and (
            (labels.parent == target and labels.name in names)
            or (clears and labels.is_relative_to(target))
        ):
            raise UsageError(
                f"{option} {path} holds the label CSV of registered dataset {record.name!r} "
                f"({labels}); choose another folder"
            )
    return target


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one folder (``~`` expanded, links followed)."""
    return _resolved(Path(a)) == _resolved(Path(b))


def _folders_of(record: DatasetRecord) -> Iterator[tuple[Path, str]]:
    """The folders whose images belong to ``record``: its image folder, and the raw JPEG
    folder a download keeps."""
    if record.root is not None:
        yield _resolved(record.root), "image folder"
    raw = record.provenance.get("raw_dir")
    if isinstance(raw, str) and raw:
        yield _resolved(Path(raw)), "raw image folder"


@contextmanager
def existing_registry(home: str | Path | None) -> Iterator[Registry | None]:
    """The registry at ``home`` (as :meth:`Registry.open` finds it) if there is one to check
    an output folder against, else None: nothing is created, and a registry that cannot be
    opened is left to the commands that use it."""
    try:
        found = (resolve_home(home) / REGISTRY_FILE).is_file()
    except HpaToolError:
        found = False
    reg: Registry | None = None
    if found:
        try:
            reg = Registry.open(home)
        except HpaToolError:
            reg = None
    try:
        yield reg
    finally:
        if reg is not None:
            reg.close()
