"""``download-external``: the HPA v18 external images, resumable, converted on the fly.

:func:`download_external` registers (or updates) an ``external`` dataset from the label CSV,
works out from the disk what is still missing (:mod:`~hpatool.download.plan`), fetches it with
the async core in :mod:`hpatool.download._client` on the one event loop
(:mod:`~hpatool.download._loop`), converts each image in a process pool
(:mod:`hpatool.convert`) and records per-sample status in the registry in small batches
(:mod:`~hpatool.download.tracker`).

Layout under ``--out DIR``:

- ``DIR/<Id>_<colour>.png``: 8-bit greyscale, ``size``×``size`` (not with ``--size 0``);
- ``DIR/raw/<Id>_<colour>.jpg``: the JPEGs as served, with ``--keep-raw`` or ``--size 0``;
- ``DIR/failures.csv``: ``Id,colour,url,status,error`` of files that failed permanently;
- ``DIR/.hpatool-images.json``: the size and channel rule of the PNGs.

What is finished is read from the disk (a file is only ever renamed into place whole), so a
rerun, or a run after Ctrl-C or ``kill -9``, fetches only what is missing; the registry status
(``done``, ``failed``, NULL = pending) follows the disk. A sample whose only failures are 404 /
410 is ``missing``: final, later runs skip it without a request unless ``retry_missing``; a run
whose first requests all get 404 stops early (a wrong ``--base-url``) and leaves the registry
as it was.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hpatool.convert.lock import output_lock
from hpatool.convert.outdir import (
    FAILURES_CSV,
    check_path_text,
    claim_output_dir,
    prepare_out_dir,
    write_failures_csv,
)
from hpatool.convert.pool import process_pool
from hpatool.download._client import (
    ClientSettings,
    Counters,
    Downloader,
    FileJob,
    ServerUnreachable,
)
from hpatool.download._loop import event_loop_name, run_loop
from hpatool.download.options import (
    DEFAULT_NAME,
    DownloadOptions,
    Shard,
    check_options,
    parse_colours,
)
from hpatool.download.plan import Folders, Plan, file_jobs, plan_from_disk, status_fixes
from hpatool.download.registration import (
    Labels,
    check_existing,
    read_labels,
    register,
    unregister,
)
from hpatool.download.retry import MISSING_ONLY_MIN, Failure
from hpatool.download.tracker import (
    STATUS_DONE,
    STATUS_MISSING,
    DownloadProgress,
    DownloadProgressFn,
    FileFailure,
    Tracker,
)
from hpatool.download.urls import DEFAULT_BASE_URL, is_loopback
from hpatool.errors import Interrupted
from hpatool.options import DownloadConfig
from hpatool.outputs import check_output_dir
from hpatool.registry import DatasetRecord, Registry
from hpatool.signals import deferred_interrupts

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_NAME",
    "DownloadConfig",
    "DownloadProgress",
    "DownloadProgressFn",
    "DownloadSummary",
    "FileFailure",
    "Interrupted",
    "MissingOnServer",
    "Shard",
    "download_external",
    "event_loop_name",
    "parse_colours",
]
#: The columns of ``DIR/failures.csv``.
FAILURES_HEADER = ("Id", "colour", "url", "status", "error")


class MissingOnServer(UserWarning):
    """Samples are missing on the server (404 / 410): a run that failed nothing else succeeds,
    with this warning (the CLI shows it as one ``warning:`` line)."""


@dataclass(frozen=True)
class DownloadSummary:
    dataset: str
    out_dir: Path
    root: Path  # where the dataset's images are: out_dir, or out_dir/raw with --size 0
    samples: int  # selected for this run (after --shard and --limit)
    already_done: int  # complete before the run: no request made
    completed: int  # completed by this run
    failed: int  # samples with a file that failed in a way a rerun may fix (status failed)
    #: samples whose only failures are 404 / 410 (status missing): found by this run, or known
    #: from an earlier one and skipped (``skipped_missing`` of them, without a request)
    missing: int
    skipped_missing: int
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
        return self.samples - self.already_done - self.completed - self.failed - self.missing

    @property
    def missing_files(self) -> int:
        """Files of ``failures`` that are missing on the server (404 / 410)."""
        return sum(1 for f in self.failures if f.missing)

    @property
    def files_per_s(self) -> float:
        return self.files_fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0


def download_external(
    reg: Registry,
    labels: Path,
    out_dir: Path,
    config: DownloadConfig | None = None,
    *,
    progress: DownloadProgressFn | None = None,
    retry_missing: bool = False,
) -> DownloadSummary:
    """Download (what is missing of) the external images listed in ``labels`` into ``out_dir``,
    with the options of ``config`` (default: ``DownloadConfig()``).

    Returns a summary; permanent failures are data (``summary.failures`` and
    ``out_dir/failures.csv``), not exceptions. A sample whose only failures are 404 / 410 gets
    the status ``missing`` and is skipped by later runs without a request, unless
    ``retry_missing``. Raises ``UsageError`` for bad options, ``DataError`` for a bad CSV,
    ``Interrupted`` after Ctrl-C / SIGTERM (finished files and statuses are kept, no ``.part``
    file is left), ``WorkFailed`` when no file could be fetched from the server at all (a wrong
    ``--base-url``: then the registry is left as it was before the run).
    """
    started = time.perf_counter()
    # ---- check everything before touching the registry or the disk
    opts = check_options(config if config is not None else DownloadConfig())
    source = read_labels(labels)
    check_path_text(out_dir, "--out folder")
    existing = reg.dataset(opts.name) if reg.has_dataset(opts.name) else None
    if existing is not None:
        check_existing(existing, opts.name, labels, source.sha256)
    _check_out_dir(reg, opts, out_dir)
    out = prepare_out_dir(out_dir)
    shard = str(opts.shard) if opts.shard is not None else None
    with output_lock(out, "download-external", shard):
        return _download(reg, opts, source, out, started, progress, retry_missing)


def _check_out_dir(reg: Registry, opts: DownloadOptions, out_dir: Path) -> None:
    """Refuse an ``--out`` (or its ``raw`` folder) holding what must be kept: the registry's
    home, or the images of a registered dataset other than this download's own."""
    folders = [out_dir, out_dir / "raw"] if opts.keep_raw else [out_dir]
    for folder in folders:
        check_output_dir(folder, "--out", reg, own_dataset=opts.name, writes=(FAILURES_CSV,))


def _download(
    reg: Registry,
    opts: DownloadOptions,
    source: Labels,
    out: Path,
    started: float,
    progress: DownloadProgressFn | None,
    retry_missing: bool,
) -> DownloadSummary:
    """The work of :func:`download_external`, with the output folder locked."""
    work = _prepare(reg, opts, source, out, retry_missing)
    plans = work.plans
    counters = Counters()
    tracker = Tracker(
        reg=reg,
        name=opts.name,
        remaining={i: p.files for i, p in plans.items()},
        samples_total=len(work.chosen),
        samples_done=len(work.chosen) - len(plans) - len(work.skipped),
        files_total=sum(p.files for p in plans.values()),
        counters=counters,
        progress=progress,
        started=started,
        skipped_missing=len(work.skipped),
    )
    tracker.report()
    interrupted = None
    if plans:
        jobs = file_jobs(plans, opts.base_url, work.folders, opts.size, keep_raw=opts.keep_raw)
        try:
            interrupted = _fetch(opts, jobs, tracker, check_missing=not retry_missing)
        except ServerUnreachable:
            unregister(reg, opts.name, work.before)
            raise
    tracker.report()
    summary = _summarise(opts, work, tracker, interrupted, started)
    if interrupted is not None:
        raise _with_counts(interrupted, summary)
    return summary


@dataclass(frozen=True)
class _Work:
    """What a run works on, from :func:`_prepare`."""

    folders: Folders
    chosen: list[str]  # the samples of this run (after --shard and --limit), CSV order
    plans: dict[str, Plan]  # the work left, per sample, read from the disk
    skipped: frozenset[str]  # known to be missing on the server: no request this run
    before: DatasetRecord | None  # the dataset as it was before this run (None: new)


def _prepare(
    reg: Registry,
    opts: DownloadOptions,
    source: Labels,
    out_dir: Path,
    retry_missing: bool,
) -> _Work:
    """The folders, the samples of this run (after --shard and --limit), and the work left for
    them, from the disk (less the samples missing on the server, unless ``retry_missing``);
    the dataset registered and its statuses set to agree with the disk, in one transaction."""
    folders = Folders.under(out_dir, opts.size)
    if opts.size > 0:
        claim_output_dir(folders.out, opts.size, opts.channel_rule)
    if opts.keep_raw:
        folders.raw.mkdir(exist_ok=True)
    chosen = [i for i in source.table.ids if opts.shard is None or i in opts.shard]
    if opts.limit is not None:
        chosen = chosen[: opts.limit]
    plans = plan_from_disk(chosen, opts.colours, folders, opts.size, opts.keep_raw)
    with reg.transaction():
        # Checked again inside the write transaction: another run (a shard of the same CSV)
        # may have registered the dataset since the first check; it is then adopted.
        existing = reg.dataset(opts.name) if reg.has_dataset(opts.name) else None
        if existing is not None:
            check_existing(existing, opts.name, source.path, source.sha256)
        register(reg, opts, source, existing, folders)
        statuses = {s.id: s.status for s in reg.samples(opts.name)}
        fixes = status_fixes(chosen, plans, statuses, STATUS_DONE)
        if fixes:
            reg.set_status(opts.name, fixes)
    skipped = frozenset(
        () if retry_missing else (i for i in plans if statuses.get(i) == STATUS_MISSING)
    )
    plans = {i: p for i, p in plans.items() if i not in skipped}
    return _Work(folders, chosen, plans, skipped, existing)


def _fetch(
    opts: DownloadOptions, jobs: Iterator[FileJob], tracker: Tracker, *, check_missing: bool
) -> Interrupted | None:
    """Run the jobs on the event loop; the ``Interrupted`` to raise after Ctrl-C or SIGTERM
    (the clean-up, ``.part`` files and statuses, has been done), else None. A run that got
    nothing but 404s raises ``ServerUnreachable`` and records nothing: early (the first
    ``MISSING_ATTEMPTS`` requests), or at its end when ``check_missing`` and it started from
    nothing (no sample complete) and made ``MISSING_ONLY_MIN`` requests or more."""
    settings = ClientSettings(
        concurrency=opts.concurrency,
        retries=opts.retries,
        timeout=opts.timeout,
        backoff=opts.backoff,
        size=opts.size,
        channel_rule=opts.channel_rule,
        max_bytes=opts.max_bytes,
        base_url=opts.base_url,
    )
    # Converting is CPU work for a process pool; with --size 0 the only work is the decode
    # check, which Pillow runs without the GIL: threads do it with less overhead per file.
    pool: Executor = (
        process_pool(opts.workers)
        if opts.size > 0
        else ThreadPoolExecutor(opts.workers, "hpa-check")
    )
    downloader = Downloader(settings, pool, tracker.on_result, tracker.counters)
    interrupted: Interrupted | None = None
    stopped = False  # for a wrong --base-url: nothing of this run is recorded
    try:
        run_loop(
            downloader.run(jobs, tracker.files_total, trust_env=not is_loopback(opts.base_url))
        )
        if (
            check_missing
            and downloader.only_missing
            and tracker.samples_done == 0
            and tracker.counters.requests >= MISSING_ONLY_MIN
        ):
            raise downloader.wrong_base_url(first=False)
    except KeyboardInterrupt:
        interrupted = Interrupted("interrupted")
    except asyncio.CancelledError:
        interrupted = Interrupted("terminated", exit_code=143)
    except ServerUnreachable:
        stopped = True
        raise
    finally:
        # A second Ctrl-C must not cut the clean-up short (.part files, statuses).
        with deferred_interrupts() as held:
            pool.shutdown(wait=True, cancel_futures=True)
            downloader.remove_parts()
            if stopped:
                tracker.discard()
            else:
                tracker.flush(force=True)
        if held and interrupted is None:
            interrupted = Interrupted("interrupted")
    return interrupted


def _summarise(
    opts: DownloadOptions,
    work: _Work,
    tracker: Tracker,
    interrupted: Interrupted | None,
    started: float,
) -> DownloadSummary:
    """The summary, with the failures in CSV order, written to ``failures.csv`` (with those of
    the samples skipped as missing on the server, kept from the last list)."""
    folders = work.folders
    order = {sample_id: i for i, sample_id in enumerate(work.chosen)}
    colours = {c: i for i, c in enumerate(opts.colours)}
    kept = _missing_rows(folders.out / FAILURES_CSV, work.skipped)
    failures = sorted(
        [*tracker.failures, *kept],
        key=lambda f: (order.get(f.id, 0), colours.get(f.colour, len(colours)), f.colour),
    )
    # A finished run lists its failures (none: the stale file goes); an interrupted run that
    # failed nothing leaves the last list alone, its samples have not all been retried.
    failures_csv: Path | None = None
    if tracker.failures or interrupted is None:
        failures_csv = write_failures_csv(
            folders.out / FAILURES_CSV,
            list(FAILURES_HEADER),
            [
                [f.id, f.colour, f.url, f.status if f.status is not None else "", f.error]
                for f in failures
            ],
        )
    elif (folders.out / FAILURES_CSV).is_file():
        failures_csv = folders.out / FAILURES_CSV
    counters = tracker.counters
    return DownloadSummary(
        dataset=opts.name,
        out_dir=folders.out,
        root=folders.root,
        samples=len(work.chosen),
        already_done=tracker.samples_done,
        completed=tracker.completed,
        failed=tracker.failed_samples,
        missing=tracker.missing_samples + len(work.skipped),
        skipped_missing=len(work.skipped),
        files_fetched=tracker.files_fetched,
        files_converted=tracker.files_converted,
        bytes=counters.bytes,
        requests=counters.requests,
        retries=counters.retries,
        failures=tuple(failures),
        failures_csv=failures_csv,
        elapsed_s=time.perf_counter() - started,
    )


def _missing_rows(path: Path, skipped: frozenset[str]) -> list[FileFailure]:
    """The rows of the last ``failures.csv`` for the samples skipped as missing on the server
    (every failure of theirs was a 404 / 410), so that the new list still names their files;
    none if there is no readable list."""
    if not skipped:
        return []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    kept = []
    for row in rows:
        sample_id, colour, status = row.get("Id"), row.get("colour"), row.get("status") or ""
        if sample_id in skipped and colour:
            kept.append(
                FileFailure(
                    sample_id,
                    colour,
                    row.get("url") or "",
                    int(status) if status.isdigit() else None,
                    row.get("error") or "",
                    Failure.MISSING.value,
                )
            )
    return kept


def _with_counts(exc: Interrupted, s: DownloadSummary) -> Interrupted:
    done = s.already_done + s.completed
    missing = f", {s.missing:,} missing on the server" if s.missing else ""
    return Interrupted(
        f"{exc.message}: {done:,} of {s.samples:,} samples complete, {s.failed:,} failed"
        f"{missing}, {s.pending:,} pending; finished files are kept, rerun the same command to "
        "resume",
        exit_code=exc.exit_code,
    )
