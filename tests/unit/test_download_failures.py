"""download-external's failure kinds: retry, give-up and unreachable decisions use the kind,
never the wording of the message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpatool.download._client import (
    ClientSettings,
    Downloader,
    FileJob,
    ServerUnreachable,
    _Attempt,
)
from hpatool.download.retry import UNREACHABLE_ATTEMPTS, Failure


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
