"""The decoded sample cache: every sample of a dataset decoded once into uint8 arrays.

Reading a sample's four PNGs costs 5-7 ms of a core (four decodes); reading the same pixels from
a memory-mapped ``.npy`` file costs a few hundredths of a millisecond, and a random crop reads
only its window. ``hpatool datasets cache NAME`` builds ``<home>/cache/<NAME>/``:

- ``<id>.npy``: the sample's ``(4, H, W)`` uint8 array (R, G, B, Y) at its stored size,
  uncompressed (so that a window can be read without the rest: 1 MiB for a 512 px sample,
  about 10 GiB for 10,000 such samples), written to a temporary name and renamed;
- ``index.sqlite``: one row per cached sample with its *stamp* (the size and modification time,
  in nanoseconds, of each of its four channel files when it was decoded) and its size, and a
  ``complete`` mark written only when every usable sample of the dataset is cached.

A build (``hpatool.data.cache_build``) is resumable: a rerun decodes only the samples without a
row, or whose files changed since; a build killed at any point leaves no ``complete`` mark, and
a cache without it is never used. A plain folder: it can live on shared storage (or be moved to
a fast local disk, see ``docs/workflow.md``), and each DDP rank reads only its own samples.

``use_cache`` is what ``train``, ``cv``, ``evaluate`` and ``predict`` call: a complete cache is
used only if it matches the dataset's images now (the same usable samples, every stamp equal);
otherwise they stop with one line that says how to rebuild it (or to pass ``--cache off``).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import sqlite3
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import path_problem
from hpatool.errors import DataError, UsageError
from hpatool.ids import COLOURS, channel_path, id_problem
from hpatool.registry import Registry

CACHE_FOLDER = "cache"
INDEX_FILE = "index.sqlite"
FORMAT = 1
#: ``--cache`` values: use a dataset's cache when it is complete and up to date, or never.
CACHE_MODES = ("auto", "off")

Stamp = str  # JSON of [size, mtime_ns] of the four channel files, R, G, B, Y
ProgressFn = Callable[[int, int], None]


def cache_folder(home: Path, dataset: str) -> Path:
    """``<home>/cache/<dataset>``."""
    return Path(home) / CACHE_FOLDER / dataset


def sample_stamp(root: Path, sample_id: str) -> Stamp:
    """The size and modification time (ns) of the sample's four channel files, as text;
    ``FileNotFoundError`` when one is gone."""
    parts = []
    for colour in COLOURS:
        st = os.stat(channel_path(root, sample_id, colour))
        parts.append([st.st_size, st.st_mtime_ns])
    return json.dumps(parts, separators=(",", ":"))


def array_name(sample_id: str) -> str:
    """The file name of a sample's array (ids are checked safe as file names first)."""
    problem = id_problem(sample_id)
    if problem:
        raise DataError(f"sample id {sample_id!r} cannot name a cache file: {problem}")
    return f"{sample_id}.npy"


# ------------------------------------------------------------------------------- the index


@contextmanager
def open_index(folder: Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    path = folder / INDEX_FILE
    if not create and not path.is_file():
        raise FileNotFoundError(path)
    try:
        conn = sqlite3.connect(path, timeout=60)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS samples (id TEXT PRIMARY KEY, stamp TEXT NOT NULL, "
                "height INTEGER NOT NULL, width INTEGER NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.commit()
            yield conn
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"{path}: not a readable cache index ({exc}); remove the cache with 'hpatool datasets "
            f"cache {folder.name} --drop' and build it again"
        ) from None


def index_rows(conn: sqlite3.Connection) -> dict[str, tuple[Stamp, int, int]]:
    return {sid: (st, h, w) for sid, st, h, w in conn.execute("SELECT * FROM samples")}


def index_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of the files in ``folder`` (0 when it is not there)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# ------------------------------------------------------------------------------- using


@dataclass(frozen=True)
class CacheView:
    """A complete, up-to-date cache of one dataset: each sample's array file and size."""

    dataset: str
    folder: Path
    sizes: dict[str, tuple[int, int]]  # id -> (height, width)

    def path(self, sample_id: str) -> Path | None:
        return self.folder / array_name(sample_id) if sample_id in self.sizes else None


class CacheIncomplete(UserWarning):
    """A dataset's cache exists but was never finished: the images are read instead."""


def stale_error(dataset: str, why: str) -> DataError:
    return DataError(
        f"the decoded cache of dataset {dataset!r} is out of date: {why}; rebuild it with "
        f"'hpatool datasets cache {dataset}' or pass --cache off"
    )


def use_cache(reg: Registry, name: str, mode: str = "auto") -> CacheView | None:
    """Dataset ``name``'s cache when ``mode`` is ``auto`` and the cache is complete; ``None``
    without one (or ``--cache off``). A cache that does not match the dataset's images now (a
    usable sample not in it, a cached one no longer usable, any file whose size or modification
    time changed) is a ``DataError`` saying how to rebuild it; one whose build never finished is
    skipped with one ``CacheIncomplete`` warning."""
    import warnings

    from hpatool.availability import usable_samples

    if mode not in CACHE_MODES:
        raise UsageError(f"--cache {mode} is invalid; use auto or off")
    folder = cache_folder(reg.path.parent, name)
    index = folder / INDEX_FILE
    if mode == "off" or not (index.exists() or index.is_symlink()):
        return None
    if not index.is_file():
        raise DataError(
            f"{index}: not a readable cache index ({path_problem(index)}); remove the cache with "
            f"'hpatool datasets cache {name} --drop' and build it again, or pass --cache off"
        )
    with open_index(folder, create=False) as conn:
        complete = index_meta(conn, "complete")
        rows = index_rows(conn) if complete else {}
    if not complete:
        warnings.warn(
            f"the decoded cache of dataset {name!r} is incomplete (its build was stopped); "
            f"reading the images instead: finish it with 'hpatool datasets cache {name}'",
            CacheIncomplete,
            stacklevel=2,
        )
        return None
    root = reg.dataset(name).image_root()
    usable = usable_samples(reg, name)
    ids = [s.id for s in usable.samples]
    extra = set(rows) - set(ids)
    if extra:
        first = sorted(extra)[0]
        why = f"sample {first!r} no longer has all its images ({len(extra):,} such)"
        raise stale_error(name, why)
    for sid in ids:
        row = rows.get(sid)
        if row is None:
            raise stale_error(name, f"sample {sid!r} was added after caching")
        try:
            now = sample_stamp(root, sid)
        except FileNotFoundError as exc:
            raise stale_error(name, f"{exc.filename} is gone") from None
        if now != row[0]:
            raise stale_error(name, f"the files of sample {sid!r} changed after caching")
        array = folder / array_name(sid)
        problem = array_problem(array, row[1], row[2])
        if problem:
            raise DataError(
                f"{array}: unreadable cache file of sample {sid!r} "
                f"({problem}); rebuild the cache with 'hpatool datasets cache {name}' or pass "
                "--cache off"
            )
    return CacheView(name, folder, {sid: (h, w) for sid, (_, h, w) in rows.items()})


_NPY_HEADER = re.compile(
    r"\{'descr': '\|u1', 'fortran_order': False, 'shape': \((\d+), (\d+), (\d+)\), \}"
)


def _header_shape(head: bytes) -> tuple[tuple[int, ...], int] | str:
    """The ``(4, H, W)`` shape and data offset of a cache ``.npy`` file from its first bytes,
    or why it is not one."""
    if head[:8] != b"\x93NUMPY\x01\x00" or len(head) < 10:
        return "not a .npy file of the cache"
    (header_len,) = struct.unpack("<H", head[8:10])
    match = _NPY_HEADER.match(head[10 : 10 + header_len].decode("latin-1"))
    shape = tuple(int(v) for v in match.groups()) if match else ()
    if len(shape) != 3 or shape[0] != len(COLOURS):
        return "not a (4, H, W) uint8 array"
    return shape, 10 + header_len


def array_problem(path: Path, height: int, width: int) -> str | None:
    """Why ``path`` is not the cache file of a ``height`` x ``width`` sample (missing, another
    file, another shape, truncated), from its header and size alone; ``None`` if it is."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    parsed = _header_shape(head)
    if isinstance(parsed, str):
        return parsed
    shape, offset = parsed
    if shape[1:] != (height, width):
        return f"{shape[1]}x{shape[2]} pixels where the index says {height}x{width}"
    if size - offset != shape[0] * shape[1] * shape[2]:
        return "truncated"
    return None


def read_cached(path: Path, sample_id: str) -> np.ndarray:
    """A cached sample as a read-only memory map: a crop of it reads only its window. The
    ``.npy`` header the cache writes (uint8, C order, ``(4, H, W)``) is matched with a regular
    expression (``np.load``'s general parser costs ten times the read); any other file is a
    ``DataError`` saying how to rebuild the cache."""

    def bad(why: str) -> DataError:
        return DataError(
            f"{path}: unreadable cache file of sample {sample_id!r} ({why}); rebuild the cache "
            "with 'hpatool datasets cache NAME' or pass --cache off"
        )

    try:
        with open(path, "rb") as fh:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise bad(str(getattr(exc, "strerror", None) or exc)) from None
    parsed = _header_shape(data[:256])
    if isinstance(parsed, str):
        raise bad(parsed)
    shape, offset = parsed
    if len(data) - offset != shape[0] * shape[1] * shape[2]:
        raise bad("truncated")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def cache_summary(home: Path, name: str) -> dict[str, Any] | None:
    """``datasets show``'s cache line: folder, bytes, samples, complete; ``None`` if none."""
    folder = cache_folder(home, name)
    if not (folder / INDEX_FILE).is_file():
        return None
    try:
        with open_index(folder, create=False) as conn:
            complete = index_meta(conn, "complete") is not None
            samples = int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except DataError:
        complete, samples = False, 0
    return {
        "folder": str(folder),
        "bytes": folder_bytes(folder),
        "samples": samples,
        "complete": complete,
    }


def drop_cache(home: Path, name: str) -> int:
    """Remove dataset ``name``'s cache folder (only the files a cache holds); its bytes."""
    folder = cache_folder(home, name)
    if not folder.is_dir():
        return 0
    size = folder_bytes(folder)
    for p in folder.iterdir():
        ours = p.suffix == ".npy" or p.name.startswith((INDEX_FILE, ".tmp-"))
        if ours and (p.is_file() or p.is_symlink()):
            p.unlink()
        elif ours and p.is_dir():
            with suppress(OSError):  # an empty folder in a file's place; anything in it stays
                p.rmdir()
    with suppress(OSError):  # something else was put there: left alone
        folder.rmdir()
    return size
