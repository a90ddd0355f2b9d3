"""``download-external``: the HPA v18 external images, resumable, converted on the fly.

:func:`download_external` registers (or updates) an ``external`` dataset from the label CSV,
works out from the disk what is still missing, fetches it with the async core in
:mod:`hpatool.download._client` (the one ``asyncio.run`` is here), converts each image in a
process pool and records per-sample status in the registry in small batches.

Layout under ``--out DIR``:

- ``DIR/<Id>_<colour>.png``: 8-bit greyscale, ``size``×``size`` (not with ``--size 0``);
- ``DIR/raw/<Id>_<colour>.jpg``: the JPEGs as served, with ``--keep-raw`` or ``--size 0``;
- ``DIR/failures.csv``: ``Id,colour,url,status,error`` of files that failed permanently;
- ``DIR/.hpatool-images.json``: the size and channel rule of the PNGs.

What is finished is read from the disk (a file is only ever renamed into place whole), so a
rerun, or a run after Ctrl-C or ``kill -9``, fetches only what is missing; the registry status
(``done``, ``failed``, NULL = pending) follows the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hpatool import __version__
from hpatool._io import sha256_file
from hpatool.download._client import (
    ClientSettings,
    Counters,
    Downloader,
    FileJob,
    FileResult,
    is_loopback,
)
from hpatool.download.urls import DEFAULT_BASE_URL, check_base_url, image_url, url_problem
from hpatool.errors import DataError, Interrupted, UsageError
from hpatool.ids import COLOURS
from hpatool.imaging import check_channel_rule
from hpatool.labels import load_label_csv
from hpatool.preprocess import (
    FAILURES_CSV,
    check_size,
    check_workers,
    claim_output_dir,
    deferred_interrupts,
    prepare_out_dir,
    process_pool,
    remove_leftovers,
    write_failures_csv,
)
from hpatool.registry import Registry, check_name, now

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_NAME",
    "DownloadProgress",
    "DownloadSummary",
    "FileFailure",
    "Interrupted",
    "Shard",
    "download_external",
    "parse_colours",
]

DEFAULT_NAME = "hpa-v18"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
MAX_CONCURRENCY = 1024
#: Statuses reach the registry at least this often (seconds), or every STATUS_BATCH samples.
STATUS_FLUSH_S = 1.0
STATUS_BATCH = 500
PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the ids whose CRC-32 is ``index - 1`` mod
    ``count``. Deterministic by id alone, so every machine agrees whatever the CSV order."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise UsageError(
                f"invalid --shard {text!r}: give I/N with 1 <= I <= N, e.g. 1/4 ... 4/4 to split "
                "the work over four machines"
            )
        return cls(int(m.group(1)), int(m.group(2)))

    def __contains__(self, sample_id: object) -> bool:
        return zlib.crc32(str(sample_id).encode()) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_colours(colours: str | Sequence[str]) -> tuple[str, ...]:
    """Colours from ``"red,green,blue,yellow"`` (or a sequence), validated, in the given order."""
    items = colours.split(",") if isinstance(colours, str) else list(colours)
    out: list[str] = []
    for item in (c.strip().lower() for c in items):
        if not item:
            continue
        if item not in COLOURS:
            raise UsageError(
                f"unknown colour {item!r} in --colors; use some of {','.join(COLOURS)}"
            )
        if item in out:
            raise UsageError(f"colour {item!r} given twice in --colors")
        out.append(item)
    if not out:
        raise UsageError(f"--colors is empty; use some of {','.join(COLOURS)}")
    return tuple(out)


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot for progress bars; counts are for this run's selection of samples."""

    samples_total: int
    samples_done: int  # complete, including those complete before the run
    samples_failed: int
    files_total: int  # files this run has to fetch or convert
    files_done: int
    files_failed: int
    bytes: int
    requests: int
    retries: int
    elapsed_s: float


DownloadProgressFn = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class FileFailure:
    id: str
    colour: str
    url: str
    status: int | None
    error: str


@dataclass(frozen=True)
class DownloadSummary:
    dataset: str
    out_dir: Path
    root: Path  # where the dataset's images are: out_dir, or out_dir/raw with --size 0
    samples: int  # selected for this run (after --shard and --limit)
    already_done: int  # complete before the run: no request made
    completed: int  # completed by this run
    failed: int  # samples with a file that failed permanently
    files_fetched: int
    files_converted: int  # converted from raw JPEGs already on disk, without a request
    bytes: int
    requests: int
    retries: int
    failures: tuple[FileFailure, ...]
    failures_csv: Path | None
    elapsed_s: float

    @property
    def pending(self) -> int:
        return self.samples - self.already_done - self.completed - self.failed

    @property
    def files_per_s(self) -> float:
        return self.files_fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Plan:
    fetch: list[str]
    local: list[str]


@dataclass
class _Tracker:
    """Turns per-file results into per-sample statuses, batched registry writes and progress."""

    reg: Registry
    name: str
    remaining: dict[str, int]
    samples_total: int
    samples_done: int
    files_total: int
    counters: Counters
    progress: DownloadProgressFn | None
    started: float = field(default_factory=time.perf_counter)
    completed: int = 0
    failed_samples: int = 0
    files_done: int = 0
    files_failed: int = 0
    files_fetched: int = 0
    files_converted: int = 0
    failures: list[FileFailure] = field(default_factory=list)
    _failed_ids: set[str] = field(default_factory=set)
    _batch: list[tuple[str, str | None]] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _last_progress: float = 0.0

    def on_result(self, r: FileResult) -> None:
        job = r.job
        self.files_done += 1
        if r.ok:
            if r.fetched:
                self.files_fetched += 1
            else:
                self.files_converted += 1
        else:
            self.files_failed += 1
            self._failed_ids.add(job.sample_id)
            self.failures.append(
                FileFailure(job.sample_id, job.colour, job.url, r.status, r.error or "failed")
            )
        left = self.remaining[job.sample_id] - 1
        self.remaining[job.sample_id] = left
        if left == 0:
            if job.sample_id in self._failed_ids:
                self.failed_samples += 1
                self._batch.append((job.sample_id, STATUS_FAILED))
            else:
                self.completed += 1
                self._batch.append((job.sample_id, STATUS_DONE))
        now_m = time.monotonic()
        if len(self._batch) >= STATUS_BATCH or now_m - self._last_flush >= STATUS_FLUSH_S:
            self.flush()
        self.report(force=False)

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.reg.set_status(self.name, batch)
        self._last_flush = time.monotonic()

    def report(self, force: bool = True) -> None:
        if self.progress is None:
            return
        now_m = time.monotonic()
        if not force and now_m - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now_m
        self.progress(
            DownloadProgress(
                samples_total=self.samples_total,
                samples_done=self.samples_done + self.completed,
                samples_failed=self.failed_samples,
                files_total=self.files_total,
                files_done=self.files_done,
                files_failed=self.files_failed,
                bytes=self.counters.bytes,
                requests=self.counters.requests,
                retries=self.counters.retries,
                elapsed_s=time.perf_counter() - self.started,
            )
        )


def ensure_open_files(concurrency: int) -> None:
    """Make room for ``concurrency`` sockets and as many ``.part`` files: raise the soft limit
    on open files up to the hard one if needed, or say how to fix it."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    need = 2 * concurrency + 128
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < need:
        raise UsageError(
            f"--concurrency {concurrency} needs about {need} open files but this process may open "
            f"{soft}; lower --concurrency to {max(1, (soft - 128) // 2)} or raise 'ulimit -n'"
        )


def _check_number(value: float, lo: float, hi: float, option: str, what: str) -> None:
    if not (lo <= value <= hi):
        raise UsageError(f"invalid {option} {value:g}: give {what} from {lo:g} to {hi:g}")


def download_external(
    reg: Registry,
    labels: Path,
    out_dir: Path,
    *,
    name: str = DEFAULT_NAME,
    base_url: str = DEFAULT_BASE_URL,
    colours: str | Sequence[str] = COLOURS,
    concurrency: int = 32,
    retries: int = 5,
    timeout: float = 30.0,
    size: int = 512,
    channel_rule: str = "stain",
    keep_raw: bool = False,
    workers: int | None = None,
    limit: int | None = None,
    shard: str | Shard | None = None,
    backoff: float = 0.5,
    progress: DownloadProgressFn | None = None,
) -> DownloadSummary:
    """Download (what is missing of) the external images listed in ``labels`` into ``out_dir``.

    Returns a summary; permanent failures are data (``summary.failures`` and
    ``out_dir/failures.csv``), not exceptions. Raises ``UsageError`` for bad options,
    ``DataError`` for a bad CSV, ``Interrupted`` after Ctrl-C / SIGTERM (finished files and
    statuses are kept, no ``.part`` file is left).
    """
    started = time.perf_counter()
    # ---- check everything before touching the registry or the disk
    check_name(name)
    base = check_base_url(base_url)
    colour_list = parse_colours(colours)
    _check_number(concurrency, 1, MAX_CONCURRENCY, "--concurrency", "parallel requests")
    _check_number(retries, 0, 100, "--retries", "a number of retries")
    _check_number(timeout, 0.01, 3600, "--timeout", "seconds")
    _check_number(backoff, 0, 60, "--backoff", "seconds")
    check_size(size, zero="keeps only the raw JPEGs")
    check_channel_rule(channel_rule)
    n_workers = check_workers(workers)
    if limit is not None and limit < 1:
        raise UsageError(f"invalid --limit {limit}: give 1 or more samples")
    ensure_open_files(concurrency)
    shard_obj = Shard.parse(shard) if isinstance(shard, str) else shard
    table = load_label_csv(labels)
    for row, sample_id in enumerate(table.ids, 1):
        problem = url_problem(sample_id, safe=True)
        if problem:
            raise DataError(f"{labels}: row {row}: Id {sample_id!r}: {problem}")
    labels_abs = labels.expanduser().resolve()
    sha = sha256_file(labels_abs)
    existing = reg.dataset(name) if reg.has_dataset(name) else None
    if existing is not None:
        _check_existing(
            existing.kind, existing.labels_path, existing.labels_sha256, name, labels, sha
        )
    out = out_dir.expanduser().resolve()
    keeps_raw = keep_raw or size == 0
    raw_dir = out / "raw"
    root = out if size > 0 else raw_dir

    # ---- the folder and the registry
    out = prepare_out_dir(out_dir)
    if size > 0:
        claim_output_dir(out, size, channel_rule)
    if keeps_raw:
        raw_dir.mkdir(exist_ok=True)
    provenance = {
        "made_by": "download-external",
        "labels": str(labels_abs),
        "labels_sha256": sha,
        "base_url": base,
        "size": size,
        "channel_rule": channel_rule,
        "colours": ",".join(colour_list),
        "keep_raw": keeps_raw,
        "out": str(out),
        "raw_dir": str(raw_dir) if keeps_raw else None,
        "shard": str(shard_obj) if shard_obj else None,
        "tool_version": __version__,
        "last_run": now(),
    }
    provenance = {k: v for k, v in provenance.items() if v is not None}
    if existing is None:
        reg.create_dataset(
            name,
            "external",
            table.ids,
            table.targets,
            root=root,
            labels_path=str(labels_abs),
            labels_sha256=sha,
            provenance=provenance,
        )
    else:
        if existing.labels_path != str(labels_abs):
            reg.set_origin(name, labels_path=str(labels_abs), labels_sha256=sha)
        old = {k: v for k, v in existing.provenance.items() if k not in ("raw_dir", "shard")}
        reg.update_dataset(name, root=root, provenance={**old, **provenance})

    # ---- what is missing, from the disk
    statuses = {s.id: s.status for s in reg.samples(name)}
    chosen = [i for i in table.ids if shard_obj is None or i in shard_obj]
    if limit is not None:
        chosen = chosen[:limit]
    chosen_set = set(chosen)
    remove_leftovers(out, chosen_set)
    if keeps_raw or raw_dir.is_dir():
        remove_leftovers(raw_dir, chosen_set)
    pngs = _names(out, ".png") if size > 0 else set()
    raws = _names(raw_dir, ".jpg")
    plans: dict[str, _Plan] = {}
    fixes: list[tuple[str, str | None]] = []
    for sample_id in chosen:
        plan = _Plan([], [])
        for colour in colour_list:
            png_ok = size == 0 or f"{sample_id}_{colour}.png" in pngs
            raw_ok = f"{sample_id}_{colour}.jpg" in raws
            if png_ok and (raw_ok or not keeps_raw):
                continue
            (plan.local if (not png_ok and raw_ok) else plan.fetch).append(colour)
        if plan.fetch or plan.local:
            plans[sample_id] = plan
            if statuses.get(sample_id) == STATUS_DONE:
                fixes.append((sample_id, None))  # its files were removed since
        elif statuses.get(sample_id) != STATUS_DONE:
            fixes.append((sample_id, STATUS_DONE))  # finished, status lost to a kill
    if fixes:
        reg.set_status(name, fixes)
    already_done = len(chosen) - len(plans)

    counters = Counters()
    n_files = sum(len(p.fetch) + len(p.local) for p in plans.values())
    tracker = _Tracker(
        reg=reg,
        name=name,
        remaining={i: len(p.fetch) + len(p.local) for i, p in plans.items()},
        samples_total=len(chosen),
        samples_done=already_done,
        files_total=n_files,
        counters=counters,
        progress=progress,
    )
    tracker.report()
    interrupted: Interrupted | None = None
    if plans:
        settings = ClientSettings(
            concurrency=concurrency,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            size=size,
            channel_rule=channel_rule,
        )
        jobs = _jobs(plans, base, out, raw_dir, size, keep_raw=keeps_raw)
        # Converting is CPU work for a process pool; with --size 0 the only work is the decode
        # check, which Pillow runs without the GIL: threads do it with less overhead per file.
        pool: Executor = (
            process_pool(n_workers) if size > 0 else ThreadPoolExecutor(n_workers, "hpa-check")
        )
        downloader = Downloader(settings, pool, tracker.on_result, counters)
        try:
            _run_loop(_main(downloader, jobs, n_files, trust_env=not is_loopback(base)))
        except KeyboardInterrupt:
            interrupted = Interrupted("interrupted")
        except asyncio.CancelledError:
            interrupted = Interrupted("terminated", exit_code=143)
        finally:
            # A second Ctrl-C must not cut the clean-up short (.part files, statuses).
            with deferred_interrupts() as held:
                pool.shutdown(wait=True, cancel_futures=True)
                downloader.remove_parts()
                tracker.flush()
            if held and interrupted is None:
                interrupted = Interrupted("interrupted")
    tracker.report()

    order = {sample_id: i for i, sample_id in enumerate(chosen)}
    failures = sorted(
        tracker.failures, key=lambda f: (order.get(f.id, 0), colour_list.index(f.colour))
    )
    # A finished run lists its failures (none: the stale file goes); an interrupted run that
    # failed nothing leaves the last list alone, its samples have not all been retried.
    failures_csv: Path | None = None
    if failures or interrupted is None:
        failures_csv = write_failures_csv(
            out / FAILURES_CSV,
            ["Id", "colour", "url", "status", "error"],
            [
                [f.id, f.colour, f.url, f.status if f.status is not None else "", f.error]
                for f in failures
            ],
        )
    summary = DownloadSummary(
        dataset=name,
        out_dir=out,
        root=root,
        samples=len(chosen),
        already_done=already_done,
        completed=tracker.completed,
        failed=tracker.failed_samples,
        files_fetched=tracker.files_fetched,
        files_converted=tracker.files_converted,
        bytes=counters.bytes,
        requests=counters.requests,
        retries=counters.retries,
        failures=tuple(failures),
        failures_csv=failures_csv,
        elapsed_s=time.perf_counter() - started,
    )
    if interrupted is not None:
        raise _with_counts(interrupted, summary)
    return summary


def _with_counts(exc: Interrupted, s: DownloadSummary) -> Interrupted:
    done = s.already_done + s.completed
    return Interrupted(
        f"{exc.message}: {done:,} of {s.samples:,} samples complete, {s.failed:,} failed, "
        f"{s.pending:,} pending; finished files are kept, rerun the same command to resume",
        exit_code=exc.exit_code,
    )


def _check_existing(
    kind: str, labels_path: str | None, labels_sha: str | None, name: str, labels: Path, sha: str
) -> None:
    if kind != "external":
        raise UsageError(
            f"dataset {name!r} is a {kind} dataset, not external; give download-external "
            "another --name"
        )
    if labels_sha != sha:
        source = f"{labels_path} (sha256 {labels_sha[:12]})" if labels_sha else "no label CSV"
        raise UsageError(
            f"dataset {name!r} was registered from {source}, and {labels} differs; give another "
            f"--name, or run 'hpatool datasets remove {name}' and rerun (files already downloaded "
            "are kept and not fetched again)"
        )


def _names(folder: Path, suffix: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.name.endswith(suffix)}
    except FileNotFoundError:
        return set()


def _jobs(
    plans: dict[str, _Plan], base: str, out: Path, raw_dir: Path, size: int, *, keep_raw: bool
) -> Iterator[FileJob]:
    for sample_id, plan in plans.items():
        for colour, local in [(c, True) for c in plan.local] + [(c, False) for c in plan.fetch]:
            name = f"{sample_id}_{colour}"
            raw = raw_dir / f"{name}.jpg"
            part_dir = raw_dir if keep_raw else out
            yield FileJob(
                sample_id=sample_id,
                colour=colour,
                url=image_url(base, sample_id, colour),
                raw=raw,
                png=out / f"{name}.png" if size > 0 else None,
                part=part_dir / f"{name}.jpg.part",
                keep_raw=keep_raw,
                local=local,
            )


def _uvloop() -> ModuleType | None:
    """uvloop when it is installed and not turned off (``HPATOOL_EVENT_LOOP=asyncio``)."""
    if os.environ.get("HPATOOL_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def event_loop_name() -> str:
    """The event loop ``download_external`` runs on: ``"uvloop"`` or ``"asyncio"``."""
    return "uvloop" if _uvloop() is not None else "asyncio"


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, on uvloop's event loop when it is installed."""
    uvloop = _uvloop()
    if uvloop is not None:
        uvloop.run(main)
    else:
        asyncio.run(main)


async def _main(
    downloader: Downloader, jobs: Iterator[FileJob], n_jobs: int, trust_env: bool
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # SIGTERM stops the run as cleanly as Ctrl-C does (main thread only).
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    await downloader.run(jobs, n_jobs, trust_env=trust_env)
