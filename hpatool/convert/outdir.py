"""An output folder's bookkeeping: its settings manifest, leftovers of killed runs, and its
failures CSV.

An output folder remembers the size and channel rule its PNGs were made with (in
``.hpatool-images.json``), so that a rerun with other settings cannot mix two kinds of image in
one folder. A killed run can leave ``.part`` files (downloads) and ``.tmp-*`` files (atomic
writes); a rerun removes those of its own ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpatool import __version__
from hpatool._io import write_csv, write_text_atomic
from hpatool.errors import DataError, UsageError

#: Remembers the settings an output folder's PNGs were made with.
MANIFEST = ".hpatool-images.json"
FAILURES_CSV = "failures.csv"
MAX_SIZE = 8192
_LEFTOVER = re.compile(
    r"^(?:\.tmp-)?(?P<id>.+)_(?:red|green|blue|yellow)\.(?:jpg|png)(?:\.part$|\..+)"
)


def check_size(size: int, *, zero: str) -> int:
    """``size`` if it is 0..MAX_SIZE, else a ``UsageError`` (``zero`` says what 0 means)."""
    if not 0 <= size <= MAX_SIZE:
        raise UsageError(
            f"invalid --size {size}: give the output width and height in pixels, 1..{MAX_SIZE} "
            f"(0 {zero})"
        )
    return size


def is_utf8(text: str) -> bool:
    """Whether ``text`` (a file name as the OS gave it) is valid UTF-8: a name that is not
    holds surrogate escapes, which cannot be stored in the registry or a CSV."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_path_text(path: Path, what: str) -> None:
    """A ``UsageError`` if ``path`` (made absolute) is not valid UTF-8: it could not be
    recorded, so refuse it before any work rather than fail after it."""
    full = str(path.expanduser().absolute())
    if not is_utf8(full):
        raise UsageError(
            f"the {what} {full!r} has a name that is not valid UTF-8; rename it (e.g. with "
            "'convmv -f latin1 -t utf8') and rerun"
        )


def prepare_out_dir(out_dir: Path) -> Path:
    """``out_dir`` resolved and created, or a ``UsageError`` if it cannot be a folder."""
    out = out_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the images")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out folder {out_dir}: {exc.strerror}") from None
    return out


def claim_output_dir(out_dir: Path, size: int, rule: str) -> None:
    """Record (or check) the size and channel rule of the PNGs in ``out_dir``.

    Refuses, with the fix, to write PNGs of other settings into a folder that already holds
    some: the outputs already there would be skipped and the folder would mix two kinds.
    """
    path = out_dir / MANIFEST
    wanted = {"size": size, "channel_rule": rule}
    if not path.exists():
        write_text_atomic(
            path, json.dumps({**wanted, "tool_version": __version__}, sort_keys=True) + "\n"
        )
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        old = {"size": int(found["size"]), "channel_rule": str(found["channel_rule"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"{path}: unreadable settings file; delete it if the PNGs in {out_dir} were all "
            "made with the settings of this command"
        ) from None
    if old != wanted:
        old_size = "original size" if old["size"] == 0 else f"--size {old['size']}"
        new_size = "original size" if size == 0 else f"--size {size}"
        raise UsageError(
            f"{out_dir} holds PNGs made with {old_size} --channel-rule "
            f"{old['channel_rule']}, not {new_size} --channel-rule {rule}; rerun with those "
            "settings, or write to another --out"
        )


def remove_leftovers(folder: Path, ids: set[str]) -> None:
    """Delete ``.part`` and half-written ``.tmp-*`` files a killed run left for ``ids``.

    Only these ids: another run (a shard) writing into the same folder keeps its files.
    """
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if not (entry.name.endswith(".part") or entry.name.startswith(".tmp-")):
            continue
        m = _LEFTOVER.match(entry.name)
        if m and m.group("id") in ids:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def names_ending(folder: Path, suffix: str) -> set[str]:
    """The names of the entries of ``folder`` that end in ``suffix`` (none if no folder)."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.name.endswith(suffix)}
    except FileNotFoundError:
        return set()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
#: How far from a JPEG's end its end-of-image marker may be (some writers pad after it).
_JPEG_TAIL = 1024


def looks_whole(path: Path) -> bool:
    """Cheaply (a few bytes read, nothing decoded): whether the finished output ``path`` is a
    whole image, not an empty or truncated file (a copy cut short, a disk that filled, a file
    damaged by hand). A PNG must start with the PNG signature and end with its IEND chunk; a
    JPEG must start with SOI and have its EOI marker near its end. Other files: not empty."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as fh:
            length = os.fstat(fh.fileno()).st_size
            if suffix == ".png":
                if length < len(_PNG_SIGNATURE) + len(_PNG_END):
                    return False
                head = fh.read(len(_PNG_SIGNATURE))
                fh.seek(-len(_PNG_END), os.SEEK_END)
                return head == _PNG_SIGNATURE and fh.read() == _PNG_END
            if suffix in (".jpg", ".jpeg"):
                if length < 4:
                    return False
                head = fh.read(2)
                fh.seek(-min(length, _JPEG_TAIL), os.SEEK_END)
                return head == _JPEG_START and _JPEG_END in fh.read()
            return length > 0
    except OSError:
        return False


def write_failures_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Path | None:
    """Write ``rows`` to ``path`` atomically; with no rows remove a stale file. The path or None."""
    if not rows:
        path.unlink(missing_ok=True)
        return None
    return write_csv(path, header, rows)
