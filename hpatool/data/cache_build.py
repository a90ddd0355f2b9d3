"""Building the decoded sample cache (``hpatool datasets cache``): decode every usable sample
of a dataset that is not cached yet, or whose files changed since, in worker processes; record
each finished sample's row in batches; mark the cache ``complete`` only when no sample failed.
A stop (Ctrl-C, SIGTERM, a kill) keeps what is done and never leaves a cache that a command
would use (``hpatool.data.cache`` says what the cache is and how commands use it)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import DISK_FULL_ERRNOS, DiskFull
from hpatool.data.cache import (
    FORMAT,
    ProgressFn,
    Stamp,
    array_name,
    array_problem,
    cache_folder,
    folder_bytes,
    index_rows,
    open_index,
    sample_stamp,
)
from hpatool.errors import HpaToolError, Interrupted, UsageError
from hpatool.registry import Registry


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
        if exc.errno in DISK_FULL_ERRNOS:  # every other sample would fail alike: stop
            raise DiskFull(
                target,
                exc.strerror or "no space left",
                exc.errno,
                "run 'hpatool datasets cache' again: the samples cached so far are kept",
            ) from None
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
    with open_index(folder, create=True) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'complete'")  # a build in progress
        conn.commit()
        rows = index_rows(conn)
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
            if fresh and row and array_problem(folder / array_name(sid), row[1], row[2]) is None:
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
    from hpatool.signals import sigterm_as_interrupt

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
    except DiskFull:
        flush()  # what was cached is kept, and the cache is not marked complete
        raise
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
