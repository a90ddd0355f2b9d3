"""The async download core: one aiohttp session, a fixed pool of worker coroutines.

Concurrency is bounded by the number of workers (and a connector of the same size), so a
request only starts its clock when a worker is free to send it: queued files never time out
while waiting. Each file is streamed to a ``.part`` file beside its target (with ``--size 0``, a
small body is read into memory and written by the thread that checks it), checked (status,
``Content-Type``, length, decodes as an image) and only then renamed into place or converted;
conversion (decode, resize, PNG encode) runs in a process pool, never on the event loop.

Timeouts, connection errors, 5xx, 408, 429 and truncated or undecodable bodies are retried with
exponential backoff and full jitter (``Retry-After`` honoured, capped); 403, 404, 410 and other
4xx, and a body over ``max_bytes`` once decoded (an endless body, a gzip bomb), are permanent;
404 and 410 are the kind ``MISSING`` (not on the server: the caller remembers them), and a run
whose first requests all get them stops (a wrong ``--base-url``).
Each failed attempt has a :class:`~hpatool.download.retry.Failure` kind, and the decisions
(retry, give up, "the server cannot be reached") are made on kinds, never on message text.
Nothing here prints: results go to a callback, one per file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
from yarl import URL

from hpatool import __version__
from hpatool.convert.pool import WORKER_DIED, WorkerDied
from hpatool.convert.workers import (
    MIN_SIDE,
    Outcome,
    OutcomeKind,
    convert_file,
    place_checked_body,
    verify_file,
)
from hpatool.download.retry import (
    MISSING_ATTEMPTS,
    MISSING_STATUS,
    UNREACHABLE_ATTEMPTS,
    Failure,
    backoff_delay,
    parse_retry_after,
)
from hpatool.download.urls import DEFAULT_BASE_URL, redact_text, redact_url
from hpatool.errors import WorkFailed

CHUNK = 1 << 16
#: With ``--size 0``, a body of at most this many bytes (by its ``Content-Length``) is read into
#: memory and checked, written and renamed in one thread job: the event loop then makes no file
#: system calls for it. Larger or unsized bodies are streamed to their ``.part`` file.
#: (At most ``concurrency`` such bodies are held at once: 256 MiB at 64.)
MAX_MEMORY_BODY = 4 << 20
#: A whole file may take this many times ``--timeout`` (which bounds each connect and read).
TOTAL_TIMEOUT_FACTOR = 10
_IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
R = TypeVar("R")


@dataclass(frozen=True)
class FileJob:
    """One stain of one sample to get."""

    sample_id: str
    colour: str
    url: str
    raw: Path  # <out>/raw/<Id>_<colour>.jpg
    png: Path | None  # <out>/<Id>_<colour>.png; None with --size 0
    part: Path  # where the body is streamed: beside ``raw`` if kept, else beside ``png``
    keep_raw: bool  # rename the checked body to ``raw`` (always with --size 0)
    local: bool  # ``raw`` is on disk already: convert it; fetch only if it does not decode


@dataclass(frozen=True)
class ClientSettings:
    concurrency: int
    retries: int
    timeout: float
    backoff: float
    size: int
    channel_rule: str
    max_bytes: int = 64 << 20  # the most bytes one body may have, decoded (--max-file-size)
    base_url: str = ""  # --base-url, for the "is --base-url right?" message (redacted there)


@dataclass(frozen=True)
class FileResult:
    job: FileJob
    ok: bool
    fetched: bool  # a body was downloaded (False: converted from a raw file on disk)
    status: int | None = None  # the last HTTP status, None for network errors
    error: str | None = None
    failure: Failure | None = None  # why the last attempt failed; None when ok


@dataclass
class Counters:
    requests: int = 0
    retries: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class _Attempt:
    """One request: ``failure`` None if the body arrived (whole, and an image by its type)."""

    failure: Failure | None = None
    status: int | None = None
    error: str | None = None  # for people: what went wrong
    retry_after: float | None = None
    body: bytes | None = None  # the whole body, when read into memory (not streamed to .part)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def permanent(self) -> bool:
        return self.failure is not None and not self.failure.retryable(self.status)


class _DiskError(WorkFailed):
    """A local file could not be written: fatal for the whole run (disk full, permissions)."""


class ServerUnreachable(WorkFailed):
    """No file could be fetched at all: fatal for the whole run (wrong URL, no network)."""


def _is_image_type(content_type: str) -> bool:
    ctype = content_type.strip().lower()
    return not ctype or ctype.startswith(_IMAGE_TYPES)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Downloader:
    """Runs a stream of ``FileJob``s with ``settings.concurrency`` workers over one session."""

    def __init__(
        self,
        settings: ClientSettings,
        pool: Executor,
        on_result: Callable[[FileResult], None],
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.on_result = on_result
        self.counters = counters or Counters()
        self.active_parts: set[Path] = set()
        self._session: aiohttp.ClientSession | None = None
        self.fetched_ok = 0  # files fetched and checked
        self.unreachable = 0  # attempts that did not reach an image server, while fetched_ok == 0
        self.failed_before_ok = 0  # failed attempts, while fetched_ok == 0
        self.missing_before_ok = 0  # of them, those answered 404 or 410
        self._missing_statuses: set[int] = set()
        self._last_missing_url = ""

    # ------------------------------------------------------------------ running

    async def run(self, jobs: Iterator[FileJob], n_jobs: int, trust_env: bool = True) -> None:
        """Work through ``jobs``; returns when all are done. A disk error aborts everything."""
        s = self.settings
        connector = aiohttp.TCPConnector(limit=s.concurrency, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=s.timeout * TOTAL_TIMEOUT_FACTOR, sock_connect=s.timeout, sock_read=s.timeout
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": f"hpatool/{__version__}"},
            trust_env=trust_env,
        ) as session:
            self._session = session
            tasks = [
                asyncio.create_task(self._worker(jobs)) for _ in range(min(s.concurrency, n_jobs))
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        raise exc
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._session = None
                self.remove_parts()

    def remove_parts(self) -> None:
        """Delete the ``.part`` files of unfinished work (on cancel or error)."""
        for part in list(self.active_parts):
            with contextlib.suppress(OSError):
                part.unlink()
            self.active_parts.discard(part)

    async def _worker(self, jobs: Iterator[FileJob]) -> None:
        # ``jobs`` is shared: next() runs to completion between awaits, so each job is taken once.
        for job in jobs:
            result = await self._process(job)
            self.on_result(result)

    # ------------------------------------------------------------------ one file

    async def _process(self, job: FileJob) -> FileResult:
        try:
            if job.local and job.png is not None:
                converted = await self._convert(job.raw, job)
                if converted.ok:
                    return FileResult(job, ok=True, fetched=False)
                with contextlib.suppress(OSError):
                    job.raw.unlink()  # a bad raw file (not ours, or damaged): fetch it again
            return await self._fetch_with_retries(job)
        finally:
            if job.part in self.active_parts:
                with contextlib.suppress(OSError):
                    job.part.unlink()
                self.active_parts.discard(job.part)

    async def _fetch_with_retries(self, job: FileJob) -> FileResult:
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._fetch_once(job)
            if outcome.ok:
                error = await self._finish(job, outcome.body)
                if error is None:
                    self.fetched_ok += 1
                    return FileResult(job, ok=True, fetched=True, status=200)
                outcome = _Attempt(Failure.BAD_IMAGE, 200, error)
            self._drop_part(job.part)
            self._check_reachable(job, outcome)
            if outcome.permanent or attempt > s.retries:
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                return FileResult(
                    job,
                    ok=False,
                    fetched=False,
                    status=outcome.status,
                    error=f"{outcome.error}{tries}",
                    failure=outcome.failure,
                )
            self.counters.retries += 1
            await asyncio.sleep(backoff_delay(attempt, s.backoff, outcome.retry_after))

    def _check_reachable(self, job: FileJob, outcome: _Attempt) -> None:
        """Stop the run when the server has never answered with an image and many attempts
        have failed to reach it (see ``UNREACHABLE_ATTEMPTS``) or got 404 / 410 (see
        ``MISSING_ATTEMPTS``): the ``--base-url`` is wrong, or there is no network."""
        if self.fetched_ok or outcome.failure is None:
            return
        self.failed_before_ok += 1
        if outcome.failure is Failure.MISSING:
            self._check_missing(job, outcome)
        if not outcome.failure.unreachable:
            return
        self.unreachable += 1
        limit = max(UNREACHABLE_ATTEMPTS, 2 * self.settings.concurrency)
        if self.unreachable >= limit:
            origin = URL(job.url).origin()
            url, error = redact_url(job.url), redact_text(outcome.error or "", job.url)
            raise ServerUnreachable(
                f"no image could be fetched from {origin}: the first {self.unreachable} attempts "
                f"failed (last: {url}: {error}); check --base-url and the network, "
                "then rerun the same command (finished files are kept)"
            )

    def _check_missing(self, job: FileJob, outcome: _Attempt) -> None:
        """Stop the run when the first requests (``MISSING_ATTEMPTS``, or ``2 * concurrency``
        if more) got 404 or 410 and none got an image: a wrong ``--base-url`` path, not a
        server missing every file."""
        self.missing_before_ok += 1
        self._last_missing_url = job.url
        if outcome.status is not None:
            self._missing_statuses.add(outcome.status)
        # == rather than >=: workers still in flight until the run is cancelled must not raise
        # a second error with a larger count (the first one raised is not always the one seen)
        if self.missing_before_ok == max(MISSING_ATTEMPTS, 2 * self.settings.concurrency):
            raise self.wrong_base_url(first=True)

    @property
    def only_missing(self) -> bool:
        """Whether every request so far got 404 or 410 (and there was at least one)."""
        return not self.fetched_ok and 0 < self.missing_before_ok == self.failed_before_ok

    def wrong_base_url(self, *, first: bool) -> ServerUnreachable:
        """The error of a run whose (``first``) requests got 404 / 410 and no image."""
        n, tried = self.missing_before_ok, self.failed_before_ok
        of = "the first " if first else "the "
        who = f"every one of {of}{n} requests" if n == tried else f"{n} of {of}{tried} requests"
        got = "/".join(str(s) for s in sorted(self._missing_statuses))
        base = self.settings.base_url or str(URL(self._last_missing_url).origin())
        return ServerUnreachable(
            f"{who} got {got} from {redact_url(base)}: is --base-url right? (last: "
            f"{redact_url(self._last_missing_url)}; the HPA v18 images are at "
            f"{DEFAULT_BASE_URL}); nothing was recorded, rerun with the right --base-url"
        )

    async def _fetch_once(self, job: FileJob) -> _Attempt:
        """One request for ``job``: its body streamed to ``job.part`` (or read into memory)."""
        assert self._session is not None
        self.counters.requests += 1
        try:
            async with self._session.get(URL(job.url, encoded=True)) as resp:
                return await self._read(resp, job)
        except TimeoutError:
            return _Attempt(
                Failure.TIMEOUT,
                None,
                f"timed out (no data for {self.settings.timeout:g} s "
                f"or more than {self.settings.timeout * TOTAL_TIMEOUT_FACTOR:g} s "
                "in all)",
            )
        except aiohttp.ClientPayloadError as exc:
            return _Attempt(Failure.TRUNCATED, None, f"truncated body ({_one_line(exc)})")
        except (aiohttp.TooManyRedirects, aiohttp.InvalidURL) as exc:
            return _Attempt(Failure.BAD_REQUEST, None, f"{type(exc).__name__}: {_one_line(exc)}")
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt(Failure.CONNECTION, None, f"connection error: {_one_line(exc)}")

    async def _read(self, resp: aiohttp.ClientResponse, job: FileJob) -> _Attempt:
        """Check an answer's status and type, then take its body (whole, or it is a failure)."""
        status = resp.status
        if status != 200:
            reason = f"HTTP {status}" + (f" {resp.reason}" if resp.reason else "")
            if status in MISSING_STATUS:
                return _Attempt(Failure.MISSING, status, reason)
            after = parse_retry_after(resp.headers.get("Retry-After"))
            return _Attempt(Failure.HTTP_STATUS, status, reason, after)
        ctype = resp.headers.get("Content-Type", "")
        if not _is_image_type(ctype):
            return _Attempt(
                Failure.NOT_AN_IMAGE,
                status,
                f"not an image: HTTP 200 with Content-Type {ctype.split(';')[0].strip()}",
            )
        encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
        expected = None if encoded else resp.content_length
        if expected is not None and expected > self.settings.max_bytes:
            return self._too_large(status, f"Content-Length {expected:,} bytes, over")
        if job.png is None and expected is not None and 0 < expected <= MAX_MEMORY_BODY:
            body = await resp.read()
            self.counters.bytes += len(body)
            if len(body) != expected:
                return _Attempt(
                    Failure.TRUNCATED, status, f"truncated body: {len(body)} of {expected} bytes"
                )
            return _Attempt(None, status, body=body)
        received = await self._stream(resp, job.part)
        if received > self.settings.max_bytes:
            return self._too_large(status, "more than")
        if expected is not None and received != expected:
            return _Attempt(
                Failure.TRUNCATED, status, f"truncated body: {received} of {expected} bytes"
            )
        if received == 0:
            return _Attempt(Failure.EMPTY, status, "empty body")
        return _Attempt(None, status)

    def _too_large(self, status: int, what: str) -> _Attempt:
        """A body over the cap: ``what`` is "more than" or "Content-Length N bytes, over"."""
        mib = self.settings.max_bytes >> 20
        return _Attempt(
            Failure.TOO_LARGE,
            status,
            f"body too large: {what} --max-file-size {mib} MiB (decoded); not an HPA image, "
            "or raise --max-file-size",
        )

    async def _stream(self, resp: aiohttp.ClientResponse, part: Path) -> int:
        """Write the (decoded) body to ``part``; the bytes received. Stops once more than
        ``max_bytes`` arrived (the caller fails the file). Write errors are fatal."""
        received = 0
        cap = self.settings.max_bytes
        fh = self._open(part)
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                if received + len(chunk) > cap:
                    return cap + 1  # an endless body or a gzip bomb: write no more
                self._write(fh, part, chunk)
                received += len(chunk)
                self.counters.bytes += len(chunk)
        finally:
            fh.close()
        return received

    def _open(self, part: Path) -> IO[bytes]:
        self.active_parts.add(part)
        try:
            return open(part, "wb")  # closed by _stream
        except OSError as exc:
            raise _DiskError(
                f"cannot write {part}: {exc.strerror or exc}; check the --out "
                "folder (free space, permissions)"
            ) from None

    @staticmethod
    def _write(fh: IO[bytes], part: Path, chunk: bytes) -> None:
        try:
            fh.write(chunk)
        except OSError as exc:
            raise _DiskError(
                f"cannot write {part}: {exc.strerror or exc}; free some space in "
                "the --out folder and rerun to resume"
            ) from None

    def _drop_part(self, part: Path) -> None:
        with contextlib.suppress(OSError):
            part.unlink()
        self.active_parts.discard(part)

    async def _finish(self, job: FileJob, body: bytes | None) -> str | None:
        """Check and place a downloaded body (``body`` if it was read into memory, else
        ``job.part``): convert it, and/or rename it to the raw file. Why not (the body is no
        image), or ``None``. A file that cannot be written is fatal: ``_DiskError``."""
        if body is not None:
            placed = self._fatal(
                await self._run(place_checked_body, body, str(job.part), str(job.raw), MIN_SIDE)
            )
            return None if placed.ok else f"downloaded file {placed.reason}"
        if job.png is None:
            checked = await self._run(verify_file, str(job.part), MIN_SIDE)
        else:
            checked = await self._convert(job.part, job)
        if not checked.ok:
            return f"downloaded file {checked.reason}"  # the reason, without the .part path
        try:
            if job.keep_raw:
                os.replace(job.part, job.raw)
            else:
                job.part.unlink()
        except OSError as exc:
            raise _DiskError(f"cannot move {job.part} into place: {exc.strerror or exc}") from None
        self.active_parts.discard(job.part)
        return None

    async def _convert(self, src: Path, job: FileJob) -> Outcome:
        """Convert ``src`` to the job's PNG: ``OK`` or ``BAD_IMAGE``. An output that cannot be
        written (disk full, permissions) is fatal: ``_DiskError``."""
        assert job.png is not None
        s = self.settings
        return self._fatal(
            await self._run(
                convert_file, str(src), str(job.png), job.colour, s.size, s.channel_rule
            )
        )

    @staticmethod
    def _fatal(outcome: Outcome) -> Outcome:
        """``outcome``, unless it is a write error (disk full, permissions): ``_DiskError``."""
        if outcome.kind is OutcomeKind.WRITE_ERROR:
            raise _DiskError(
                f"{outcome.message}; free some space in the --out folder (or check its "
                "permissions) and rerun to resume"
            )
        return outcome

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, fn, *args)
        except BrokenExecutor:
            raise WorkerDied(WORKER_DIED) from None
