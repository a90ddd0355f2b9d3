"""What ``preprocess`` converts: the source files of a folder (``<Id>_<colour>.<ext>``, or in
its sub-folders, one level down, as the HPA image server lays them out), the names that cannot
be used, and which outputs are already current."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hpatool.convert.outdir import is_utf8, looks_whole
from hpatool.errors import DataError
from hpatool.ids import HPAV18_ID, id_problem

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


def scan_sources(
    src_dir: Path, *, exclude: Path | None = None
) -> tuple[list[SourceFile], list[ConvertFailure]]:
    """Source files of ``src_dir`` (sorted by id, colour) and the names that cannot be used.

    Files that are not ``<Id>_<colour>.<ext>`` are ignored. When ``src_dir`` holds no such file
    itself, its sub-folders are read, one level down (not deeper; hidden ones and ``exclude``,
    the output folder, skipped): the HPA image server's layout, ``<antibody>/<plate>_<well>_
    <field>_<colour>.jpg``, where the Id is ``<antibody>_<plate>_<well>_<field>`` (see
    ``source_id``). An unsafe id, or two sources for one output (``x_red.jpg`` and
    ``x_red.png``, or ``a/x_red.png`` and ``b/x_red.png``), is a failure of that file naming
    them all.
    """
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    failures: list[ConvertFailure] = []
    if not _scan_folder(src_dir, None, found, failures):
        for folder in sub_folders(src_dir, exclude):
            _scan_folder(folder, folder.name, found, failures)
    sources: list[SourceFile] = []
    for (sample_id, colour), paths in sorted(found.items(), key=lambda kv: kv[0]):
        if len(paths) > 1:
            names = ", ".join(sorted(str(p.relative_to(src_dir)) for p in paths))
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


def sub_folders(src_dir: Path, exclude: Path | None = None) -> list[Path]:
    """The folders directly inside ``src_dir``, sorted; hidden ones and ``exclude`` left out."""
    with os.scandir(src_dir) as entries:
        folders = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]
    skip = exclude.resolve() if exclude is not None else None
    return sorted(f for f in folders if skip is None or f.resolve() != skip)


def source_id(stem: str, folder: str | None) -> str:
    """The sample Id of a source ``<stem>_<colour>.<ext>`` in sub-folder ``folder`` (``None``:
    at the top): ``<folder>_<stem>`` in the HPA server's layout (a folder named by its
    antibody number, ``10580/1610_C1_1_red.jpg`` -> ``10580_1610_C1_1``), else the stem."""
    if folder is not None and folder.isdigit() and HPAV18_ID.match(f"{folder}_{stem}"):
        return f"{folder}_{stem}"
    return stem


def _scan_folder(
    folder: Path,
    sub: str | None,
    found: dict[tuple[str, str], list[Path]],
    failures: list[ConvertFailure],
) -> int:
    """Add the sources of one folder (``sub``: its name, for a sub-folder) to ``found`` and the
    unusable names to ``failures``; the number of source names seen."""
    seen = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            m = _SOURCE_FILE.match(entry.name)
            if not m:
                continue
            seen += 1
            if not is_utf8(entry.path):
                name = entry.name if sub is None else f"{sub}/{entry.name}"
                raise DataError(
                    f"{folder if sub is None else folder.parent}: the file name {name!r} is "
                    "not valid UTF-8 and cannot be recorded; rename it (e.g. with 'convmv -f "
                    "latin1 -t utf8') and rerun (nothing was converted)"
                )
            sample_id, colour = source_id(m.group("id"), sub), m.group("colour").lower()
            problem = id_problem(sample_id)
            if problem:
                failures.append(
                    ConvertFailure(
                        sample_id, colour, entry.path, f"unusable Id {sample_id!r}: {problem}"
                    )
                )
                continue
            found[(sample_id, colour)].append(Path(entry.path))
    return seen


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
