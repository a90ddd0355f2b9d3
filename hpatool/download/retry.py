"""The retry taxonomy of downloads: the kinds of failure, which are retried, how long to wait,
and when the server counts as unreachable. Decisions are made on kinds, never on messages."""

from __future__ import annotations

import enum
import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Longest wait a server's ``Retry-After`` can impose, in seconds.
MAX_RETRY_AFTER = 120.0
#: Longest backoff between two attempts of one file, in seconds.
MAX_BACKOFF = 60.0
RETRY_STATUS = frozenset({408, 425, 429})
#: Answers that say the file is not on the server: final, remembered (a rerun skips the sample,
#: unless ``--retry-missing``). The real HPA v18 server has such permanent 404s.
MISSING_STATUS = frozenset({404, 410})
#: Give up on the whole run when this many attempts (at least; ``2 * concurrency`` if more) have
#: failed to reach the server (connection errors, timeouts, HTML instead of images) before any
#: file arrived: a wrong ``--base-url`` or no network would otherwise retry every file for hours.
UNREACHABLE_ATTEMPTS = 48
#: Give up on the whole run when this many requests (at least; ``2 * concurrency`` if more) have
#: got 404 or 410 before any file arrived: a ``--base-url`` with a wrong path would otherwise
#: record every sample as missing on the server, and the wrong URL as the dataset's provenance.
MISSING_ATTEMPTS = 24
#: A shorter run (a trial with ``--limit``) that starts from nothing, makes at least this many
#: requests and gets only 404 / 410 is stopped the same way at its end, unless
#: ``--retry-missing`` (which asks for files known to be missing: 404s are expected there).
MISSING_ONLY_MIN = 8


class Failure(enum.Enum):
    """Why one attempt at a file failed. Retrying, giving up and "the server cannot be
    reached" are decided on these kinds (and the HTTP status), not on the messages."""

    HTTP_STATUS = "http_status"  # an answer other than 200; the attempt's status says which
    #: 404 or 410 (``MISSING_STATUS``): the file is not on the server; final, and remembered
    #: (the sample's status is ``missing``: reruns skip it unless ``--retry-missing``)
    MISSING = "missing"
    TIMEOUT = "timeout"  # no data for --timeout seconds, or the whole file took too long
    CONNECTION = "connection"  # refused, reset, DNS, a broken connection
    NOT_AN_IMAGE = "not_an_image"  # 200, but with a Content-Type that is no image (a soft 404)
    TRUNCATED = "truncated"  # fewer bytes than announced, or a broken body
    EMPTY = "empty"  # 200 with no body
    BAD_IMAGE = "bad_image"  # the body arrived but does not decode as an image
    BAD_REQUEST = "bad_request"  # a request that cannot work (too many redirects, a bad URL)
    #: the body (decoded) is larger than ``--max-file-size``: an endless body, a gzip bomb, or
    #: not an HPA image; the server would send the same again, so it is not retried
    TOO_LARGE = "too_large"

    def retryable(self, status: int | None) -> bool:
        """Whether another attempt may succeed: not for 403, 404, 410 and other 4xx (but 408,
        425 and 429), nor for a request that cannot work or a body over the size cap; yes for
        everything else."""
        if self is Failure.HTTP_STATUS:
            return status is not None and (status in RETRY_STATUS or status >= 500)
        return self not in (Failure.MISSING, Failure.BAD_REQUEST, Failure.TOO_LARGE)

    @property
    def unreachable(self) -> bool:
        """Whether the attempt failed to reach an image server at all (see
        ``UNREACHABLE_ATTEMPTS``): a connection error, a timeout, or a page that is no image."""
        return self in (Failure.CONNECTION, Failure.TIMEOUT, Failure.NOT_AN_IMAGE)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped; or None."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, base: float, retry_after: float | None = None) -> float:
    """Wait before retry number ``attempt`` (1, 2, ...): the server's ``Retry-After`` if it gave
    one, else full jitter over ``base * 2**(attempt-1)`` (capped at ``MAX_BACKOFF``)."""
    if retry_after is not None:
        return retry_after
    ceiling = min(MAX_BACKOFF, base * (2.0 ** min(attempt - 1, 30)))
    return random.uniform(0.0, ceiling)
