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

A build is resumable: a rerun decodes only the samples without a row, or whose files changed
since; a build killed at any point leaves no ``complete`` mark, and a cache without it is never
used. A plain folder: it can live on shared storage (or be moved to a fast local disk, see
``docs/workflow.md``), and each DDP rank reads only its own samples.

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
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpatool.errors import DataError, HpaToolError, Interrupted, UsageError
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
def _index(folder: Path, *, create: bool) -> Iterator[sqlite3.Connection]:
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


def _rows(conn: sqlite3.Connection) -> dict[str, tuple[Stamp, int, int]]:
    return {sid: (st, h, w) for sid, st, h, w in conn.execute("SELECT * FROM samples")}


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of the files in ``folder`` (0 when it is not there)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# ------------------------------------------------------------------------------- building


@dataclass
class CacheBuild:
    """What ``datasets cache`` did for one dataset."""

    dataset: str
    folder: Path
    samples: int  # usable samples of the dataset (what a complete cache holds)
    decoded: int = 0  # decoded by this run
    reused: int = 0  # already cached and unchanged
    removed: int = 0  # rows (and arrays) of samples no longer usable, removed
    failed: dict[str, str] = field(default_factory=dict)  # id -> why
    left_out: dict[str, int] = field(default_factory=dict)  # samples without images, by reason
    bytes: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "folder": str(self.folder),
            "samples": self.samples,
            "decoded": self.decoded,
            "reused": self.reused,
            "removed": self.removed,
            "failed": len(self.failed),
            "left_out": dict(sorted(self.left_out.items())),
            "complete": self.complete,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def decode_one(root: str, sample_id: str, target: str) -> tuple[str, Stamp | None, int, int, str]:
    """Decode one sample into ``target`` (atomically): ``(id, stamp, height, width, error)``.
    The stamp is taken before reading and checked after: a file replaced meanwhile is an error,
    never a cached array that does not match its stamp."""
    from hpatool.imaging import read_sample

    base = Path(root)
    try:
        before = sample_stamp(base, sample_id)
        img = read_sample(base, sample_id)
        if sample_stamp(base, sample_id) != before:
            return sample_id, None, 0, 0, "its files changed while it was decoded; run again"
        tmp = Path(target).with_name(f".tmp-{os.getpid()}-{Path(target).name}")
        try:
            np.save(tmp, np.ascontiguousarray(img), allow_pickle=False)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except HpaToolError as exc:
        return sample_id, None, 0, 0, str(exc)
    except FileNotFoundError as exc:
        return sample_id, None, 0, 0, f"{exc.filename}: missing channel file"
    except OSError as exc:
        return sample_id, None, 0, 0, f"cannot write {target}: {exc.strerror or exc}"
    return sample_id, before, int(img.shape[1]), int(img.shape[2]), ""


def build_cache(
    reg: Registry,
    name: str,
    *,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> CacheBuild:
    """Decode every usable sample of dataset ``name`` not yet cached (or changed since) into
    its cache folder, ``workers`` processes at a time; mark the cache complete when no sample
    failed. Ctrl-C or SIGTERM stops it with what is done kept (``Interrupted``)."""
    from hpatool.availability import usable_samples

    started = time.perf_counter()
    root = reg.dataset(name).image_root()
    usable = usable_samples(reg, name)
    if usable.labels_only:
        raise UsageError(f"dataset {name!r} has no images yet: nothing to cache")
    folder = cache_folder(reg.path.parent, name)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".tmp-*"):
        leftover.unlink(missing_ok=True)
    ids = [s.id for s in usable.samples]
    result = CacheBuild(name, folder, len(ids), left_out=dict(usable.left_out))
    with _index(folder, create=True) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'complete'")  # a build in progress
        conn.commit()
        rows = _rows(conn)
        wanted = set(ids)
        gone = [sid for sid in rows if sid not in wanted]
        for sid in gone:
            (folder / array_name(sid)).unlink(missing_ok=True)
        conn.executemany("DELETE FROM samples WHERE id = ?", [(sid,) for sid in gone])
        conn.commit()
        result.removed = len(gone)
        todo = []
        for sid in ids:
            row = rows.get(sid)
            try:
                fresh = row is not None and row[0] == sample_stamp(root, sid)
            except FileNotFoundError:
                fresh = False
            if fresh and (folder / array_name(sid)).is_file():
                result.reused += 1
            else:
                todo.append(sid)
        jobs = [(str(root), sid, str(folder / array_name(sid))) for sid in todo]
        _run_jobs(conn, jobs, workers, result, progress)
        if result.complete:
            mark = {"format": FORMAT, "samples": len(ids), "built_at": time.time()}
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('complete', ?)", (json.dumps(mark),))
            conn.commit()
    result.bytes = folder_bytes(folder)
    result.seconds = time.perf_counter() - started
    return result


def _run_jobs(
    conn: sqlite3.Connection,
    jobs: Sequence[tuple[str, str, str]],
    workers: int,
    result: CacheBuild,
    progress: ProgressFn | None,
) -> None:
    """Decode ``jobs`` (in ``workers`` processes, or in this one), recording each finished
    sample's row in batches; a stop (Ctrl-C, SIGTERM) keeps what is done."""
    from hpatool.convert.pool import sigterm_as_interrupt

    total = len(jobs)
    pending: list[tuple[str, Stamp, int, int]] = []
    done = 0
    if progress:
        progress(0, total)

    def record(out: tuple[str, Stamp | None, int, int, str]) -> None:
        nonlocal done
        sid, stamp, h, w, error = out
        if error or stamp is None:
            result.failed[sid] = error
        else:
            pending.append((sid, stamp, h, w))
            result.decoded += 1
        done += 1
        if len(pending) >= 200 or done == total:
            flush()
        if progress:
            progress(done, total)

    def flush() -> None:
        conn.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", pending)
        conn.commit()
        pending.clear()

    try:
        with sigterm_as_interrupt():
            if workers <= 1 or total < 2:
                for job in jobs:
                    record(decode_one(*job))
            else:
                _in_processes(jobs, workers, record)
    except (KeyboardInterrupt, Interrupted) as exc:
        flush()
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        raise Interrupted(
            f"stopped after {result.decoded:,} of {total:,} samples of {result.dataset!r}; "
            f"what is done is kept: run 'hpatool datasets cache {result.dataset}' again to "
            "finish it",
            code,
        ) from None
    flush()


def _in_processes(
    jobs: Sequence[tuple[str, str, str]],
    workers: int,
    record: Callable[[tuple[str, Stamp | None, int, int, str]], None],
) -> None:
    """``decode_one`` over ``jobs`` in a pool of ``workers`` processes, at most ``4 * workers``
    submitted at once; cancelled on an exception."""
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        queue = iter(jobs)
        running: set[Future[Any]] = set()
        for job in queue:
            running.add(pool.submit(decode_one, *job))
            if len(running) >= 4 * workers:
                break
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                record(fut.result())
                nxt = next(queue, None)
                if nxt is not None:
                    running.add(pool.submit(decode_one, *nxt))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
    if mode == "off" or not (folder / INDEX_FILE).is_file():
        return None
    with _index(folder, create=False) as conn:
        complete = _meta(conn, "complete")
        rows = _rows(conn) if complete else {}
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
    return CacheView(name, folder, {sid: (h, w) for sid, (_, h, w) in rows.items()})


_NPY_HEADER = re.compile(
    r"\{'descr': '\|u1', 'fortran_order': False, 'shape': \((\d+), (\d+), (\d+)\), \}"
)


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
    if data[:8] != b"\x93NUMPY\x01\x00" or len(data) < 10:
        raise bad("not a .npy file of the cache")
    (header_len,) = struct.unpack("<H", data[8:10])
    match = _NPY_HEADER.match(data[10 : 10 + header_len].decode("latin-1"))
    shape = tuple(int(v) for v in match.groups()) if match else ()
    if len(shape) != 3 or shape[0] != len(COLOURS):
        raise bad("not a (4, H, W) uint8 array")
    offset = 10 + header_len
    if len(data) - offset != shape[0] * shape[1] * shape[2]:
        raise bad("truncated")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def cache_summary(home: Path, name: str) -> dict[str, Any] | None:
    """``datasets show``'s cache line: folder, bytes, samples, complete; ``None`` if none."""
    folder = cache_folder(home, name)
    if not (folder / INDEX_FILE).is_file():
        return None
    try:
        with _index(folder, create=False) as conn:
            complete = _meta(conn, "complete") is not None
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
        if p.is_file() and (p.suffix == ".npy" or p.name.startswith((INDEX_FILE, ".tmp-"))):
            p.unlink()
    with suppress(OSError):  # something else was put there: left alone
        folder.rmdir()
    return size
