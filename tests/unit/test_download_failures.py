"""download-external's failure kinds: retry, give-up and unreachable decisions use the kind,
never the wording of the message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from hpatool.download._client import (
    ClientSettings,
    Counters,
    Downloader,
    FileJob,
    FileResult,
    ServerUnreachable,
    _Attempt,
)
from hpatool.download.retry import MISSING_ATTEMPTS, UNREACHABLE_ATTEMPTS, Failure
from hpatool.download.tracker import Tracker


def downloader(pool: ThreadPoolExecutor) -> Downloader:
    settings = ClientSettings(
        concurrency=4, retries=3, timeout=1.0, backoff=0.0, size=0, channel_rule="stain"
    )
    return Downloader(settings, pool, lambda result: None)


def job(tmp_path: Path) -> FileJob:
    return FileJob(
        sample_id="1000_1_A1_1",
        colour="red",
        url="http://127.0.0.1:9/images/1000/1_A1_1_red.jpg",
        raw=tmp_path / "raw" / "1000_1_A1_1_red.jpg",
        png=None,
        part=tmp_path / "1000_1_A1_1_red.jpg.part",
        keep_raw=True,
        local=False,
    )


def test_retry_taxonomy() -> None:
    for status in (408, 425, 429, 500, 502, 503):
        assert Failure.HTTP_STATUS.retryable(status), status
    for status in (400, 401, 403, 404, 410):
        assert not Failure.HTTP_STATUS.retryable(status), status
    assert not Failure.BAD_REQUEST.retryable(None)
    assert not Failure.TOO_LARGE.retryable(200)  # an endless body or a gzip bomb: asked once
    for kind in (Failure.TIMEOUT, Failure.CONNECTION, Failure.TRUNCATED, Failure.BAD_IMAGE):
        assert kind.retryable(None) and kind.retryable(200)
    assert {k for k in Failure if k.unreachable} == {
        Failure.CONNECTION,
        Failure.TIMEOUT,
        Failure.NOT_AN_IMAGE,
    }
    # The status decides, whatever the message says.
    assert _Attempt(Failure.HTTP_STATUS, 404, "HTTP 503 Service Unavailable").permanent
    assert not _Attempt(Failure.HTTP_STATUS, 503, "HTTP 404 Not Found").permanent
    assert _Attempt(None, 200).ok and not _Attempt(None, 200).permanent


def test_unreachable_counts_kinds_not_messages(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool:
        # Worded like a connection error, but the body arrived and did not decode: the server
        # is there, so this never stops the run.
        d = downloader(pool)
        for _ in range(5 * UNREACHABLE_ATTEMPTS):
            d._check_reachable(job(tmp_path), _Attempt(Failure.BAD_IMAGE, 200, "connection error"))
        assert d.unreachable == 0
        # A connection error in other words still counts, and stops the run at the limit.
        d = downloader(pool)
        attempt = _Attempt(Failure.CONNECTION, None, "the network took a nap")
        for _ in range(UNREACHABLE_ATTEMPTS - 1):
            d._check_reachable(job(tmp_path), attempt)
        with pytest.raises(ServerUnreachable, match="the network took a nap"):
            d._check_reachable(job(tmp_path), attempt)
        # Once an image has arrived, nothing counts.
        d = downloader(pool)
        d.fetched_ok = 1
        for _ in range(2 * UNREACHABLE_ATTEMPTS):
            d._check_reachable(job(tmp_path), attempt)
        assert d.unreachable == 0


def test_404_and_410_are_missing_final_and_stop_a_run_that_got_nothing_else(
    tmp_path: Path,
) -> None:
    assert not Failure.MISSING.retryable(404) and not Failure.MISSING.unreachable
    assert _Attempt(Failure.MISSING, 410, "HTTP 410 Gone").permanent
    with ThreadPoolExecutor(1) as pool:
        # The first requests all answered 404 (or 410): a wrong --base-url path.
        d = downloader(pool)
        gone = _Attempt(Failure.MISSING, 404, "HTTP 404 Not Found")
        for _ in range(MISSING_ATTEMPTS - 1):
            d._check_reachable(job(tmp_path), gone)
        with pytest.raises(ServerUnreachable) as err:
            d._check_reachable(job(tmp_path), _Attempt(Failure.MISSING, 410, "HTTP 410 Gone"))
        assert str(err.value).startswith(
            f"every one of the first {MISSING_ATTEMPTS} requests got 404/410 from "
            "http://127.0.0.1:9: is --base-url right?"
        )
        # Mixed with other failures, the count still stops it, and says so.
        d = downloader(pool)
        for k in range(MISSING_ATTEMPTS - 1):
            d._check_reachable(job(tmp_path), gone)
            if k % 2:
                d._check_reachable(job(tmp_path), _Attempt(Failure.HTTP_STATUS, 500, "HTTP 500"))
        with pytest.raises(ServerUnreachable, match=f"{MISSING_ATTEMPTS} of the first 35 requests"):
            d._check_reachable(job(tmp_path), gone)
        # Once an image has arrived, 404s are the server's real gaps: per file, never fatal.
        d = downloader(pool)
        d.fetched_ok = 1
        for _ in range(4 * MISSING_ATTEMPTS):
            d._check_reachable(job(tmp_path), gone)
        assert d.missing_before_ok == 0


def test_failure_statuses_wait_for_the_first_download(tmp_path: Path) -> None:
    """Until a file has been downloaded only ``done`` statuses (from raw files on disk) reach
    the registry: a run stopped for a wrong --base-url records no sample as missing."""
    written: list[tuple[str, str | None]] = []

    class Reg:
        def set_status(self, name: str, updates: list[tuple[str, str | None]]) -> None:
            written.extend(updates)

    def result(sample_id: str, ok: bool, fetched: bool = False) -> FileResult:
        j = replace(job(tmp_path), sample_id=sample_id)
        if ok:
            return FileResult(j, ok=True, fetched=fetched)
        return FileResult(j, False, False, 404, "HTTP 404 Not Found", Failure.MISSING)

    def tracker() -> Tracker:
        remaining = {"1000_1_A1_1": 1, "1000_1_A1_2": 1, "1000_1_A1_3": 1}
        return Tracker(Reg(), "v18", remaining, 3, 0, 3, Counters(), None)  # type: ignore[arg-type]

    t = tracker()
    t.on_result(result("1000_1_A1_1", ok=True))  # converted from a raw file on disk
    t.on_result(result("1000_1_A1_2", ok=False))
    t.flush()
    assert written == [("1000_1_A1_1", "done")]
    t.on_result(result("1000_1_A1_3", ok=True, fetched=True))
    t.flush()
    assert written[1:] == [("1000_1_A1_2", "missing"), ("1000_1_A1_3", "done")]
    assert (t.completed, t.missing_samples, t.failed_samples) == (2, 1, 0)
    # Stopped before any download: the held failures are dropped, not written.
    written.clear()
    t = tracker()
    t.on_result(result("1000_1_A1_2", ok=False))
    t.discard()
    t.flush(force=True)
    assert written == []
