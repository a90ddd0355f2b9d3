"""What ``preprocess`` converts: the source files of a folder (``<Id>_<colour>.<ext>``), the
names that cannot be used, and which outputs are already current."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hpatool.convert.outdir import is_utf8, looks_whole
from hpatool.errors import DataError
from hpatool.ids import id_problem

SOURCE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_SOURCE_FILE = re.compile(
    r"^(?P<id>.+)_(?P<colour>red|green|blue|yellow)\.(?P<ext>jpe?g|png|tiff?)$", re.IGNORECASE
)


@dataclass(frozen=True)
class SourceFile:
    id: str
    colour: str
    path: Path


@dataclass(frozen=True)
class ConvertFailure:
    id: str
    colour: str
    path: str
    error: str


def scan_sources(src_dir: Path) -> tuple[list[SourceFile], list[ConvertFailure]]:
    """Source files of ``src_dir`` (sorted by id, colour) and the names that cannot be used.

    Files that are not ``<Id>_<colour>.<ext>`` are ignored; an unsafe id, or two sources for
    one output (``x_red.jpg`` and ``x_red.png``), is a failure of that file.
    """
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    failures: list[ConvertFailure] = []
    with os.scandir(src_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            m = _SOURCE_FILE.match(entry.name)
            if not m:
                continue
            if not is_utf8(entry.name):
                raise DataError(
                    f"{src_dir}: the file name {entry.name!r} is not valid UTF-8 and cannot be "
                    "recorded; rename it (e.g. with 'convmv -f latin1 -t utf8') and rerun "
                    "(nothing was converted)"
                )
            sample_id, colour = m.group("id"), m.group("colour").lower()
            problem = id_problem(sample_id)
            if problem:
                failures.append(
                    ConvertFailure(
                        sample_id, colour, entry.path, f"unusable Id {sample_id!r}: {problem}"
                    )
                )
                continue
            found[(sample_id, colour)].append(Path(entry.path))
    sources: list[SourceFile] = []
    for (sample_id, colour), paths in sorted(found.items(), key=lambda kv: kv[0]):
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            failures.append(
                ConvertFailure(
                    sample_id,
                    colour,
                    str(paths[0]),
                    f"several sources for {sample_id}_{colour}.png ({names}); keep one of them",
                )
            )
            continue
        sources.append(SourceFile(sample_id, colour, paths[0]))
    return sources, failures


def _output(out: Path, source: SourceFile) -> Path:
    return out / f"{source.id}_{source.colour}.png"


def _is_current(dst: Path, src: Path) -> bool:
    """An output is current if it exists, is not older than its source and looks whole (an
    empty or truncated PNG, damaged after it was written, is converted again)."""
    try:
        newer = dst.stat().st_mtime >= src.stat().st_mtime
    except FileNotFoundError:
        return False
    return newer and looks_whole(dst)
