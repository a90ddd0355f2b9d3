"""Per-file results of a download turned into per-sample statuses (written to the registry in
small batches), failures and progress snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hpatool.download._client import Counters, FileResult
from hpatool.download.retry import Failure
from hpatool.download.urls import redact_text, redact_url
from hpatool.registry import Registry

STATUS_DONE = "done"
STATUS_FAILED = "failed"  # a failure a rerun may fix: the next run asks again
#: every failure of the sample was a 404 or 410 (``Failure.MISSING``): the next run skips it
#: without a request, unless ``--retry-missing``
STATUS_MISSING = "missing"
#: Statuses reach the registry at least this often (seconds), or every STATUS_BATCH samples.
STATUS_FLUSH_S = 1.0
STATUS_BATCH = 500
PROGRESS_EVERY_S = 0.1


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
    elapsed_s: float  # since the download began (as the summary's elapsed_s)
    files_fetched: int = 0  # downloaded (not converted from raw on disk, not failed)
    #: missing on the server (404): found so by this run, or skipped as known missing
    samples_missing: int = 0

    @property
    def files_per_s(self) -> float:
        """Files downloaded per second so far: the summary's definition of files/s."""
        return self.files_fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0


DownloadProgressFn = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class FileFailure:
    id: str
    colour: str
    url: str
    status: int | None
    error: str
    #: the ``Failure`` kind of the last attempt (``"missing"``: 404 / 410, final); ``""`` unknown
    kind: str = ""

    @property
    def missing(self) -> bool:
        return self.kind == Failure.MISSING.value


@dataclass
class Tracker:
    """Turns per-file results into per-sample statuses, batched registry writes and progress.

    Status batches are short transactions of their own (a long download keeps its progress
    even if it is killed). Until the first file has been downloaded, the ``failed`` and
    ``missing`` statuses are held back (:meth:`flush` with ``force``, or :meth:`discard`): a
    run stopped because its first requests all got 404 (a wrong ``--base-url``) records no
    sample as missing."""

    reg: Registry
    name: str
    remaining: dict[str, int]  # files still to come, per sample
    samples_total: int
    samples_done: int
    files_total: int
    counters: Counters
    progress: DownloadProgressFn | None
    #: ``time.perf_counter()`` when the download began: pass the summary's start, so that the
    #: bar's rates and the summary's agree
    started: float = field(default_factory=time.perf_counter)
    #: samples known to be missing on the server, skipped without a request
    skipped_missing: int = 0
    completed: int = 0
    failed_samples: int = 0  # with a failure a rerun may fix
    missing_samples: int = 0  # whose only failures were 404 / 410
    files_done: int = 0
    files_failed: int = 0
    files_fetched: int = 0
    files_converted: int = 0
    failures: list[FileFailure] = field(default_factory=list)
    _failed_ids: set[str] = field(default_factory=set)
    _missing_ids: set[str] = field(default_factory=set)
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
            if r.failure is Failure.MISSING:
                self._missing_ids.add(job.sample_id)
            else:
                self._failed_ids.add(job.sample_id)
            # What is kept and shown never holds a password of --base-url.
            error = redact_text(r.error or "failed", job.url)
            self.failures.append(
                FileFailure(
                    job.sample_id,
                    job.colour,
                    redact_url(job.url),
                    r.status,
                    error,
                    r.failure.value if r.failure else "",
                )
            )
        left = self.remaining[job.sample_id] - 1
        self.remaining[job.sample_id] = left
        if left == 0:
            if job.sample_id in self._failed_ids:
                self.failed_samples += 1
                self._batch.append((job.sample_id, STATUS_FAILED))
            elif job.sample_id in self._missing_ids:
                self.missing_samples += 1
                self._batch.append((job.sample_id, STATUS_MISSING))
            else:
                self.completed += 1
                self._batch.append((job.sample_id, STATUS_DONE))
        now_m = time.monotonic()
        if len(self._batch) >= STATUS_BATCH or now_m - self._last_flush >= STATUS_FLUSH_S:
            self.flush()
        self.report(force=False)

    def flush(self, *, force: bool = False) -> None:
        """Write the statuses batched so far. Until a file has been downloaded only ``done``
        ones are written (converted from raw files on disk); the failures wait for the first
        download, or ``force`` (the end of a run not stopped for a wrong ``--base-url``)."""
        if force or self.files_fetched:
            batch, self._batch = self._batch, []
        else:
            batch = [b for b in self._batch if b[1] == STATUS_DONE]
            self._batch = [b for b in self._batch if b[1] != STATUS_DONE]
        if batch:
            self.reg.set_status(self.name, batch)
        self._last_flush = time.monotonic()

    def discard(self) -> None:
        """Drop the statuses not written yet (a run stopped before any file arrived)."""
        self._batch.clear()

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
                files_fetched=self.files_fetched,
                samples_missing=self.skipped_missing + self.missing_samples,
            )
        )
