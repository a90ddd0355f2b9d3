"""``download-external``'s options, checked before anything touches the registry or the disk."""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from hpatool.convert.outdir import check_size
from hpatool.convert.pool import check_workers
from hpatool.download.urls import check_base_url
from hpatool.errors import UsageError
from hpatool.ids import COLOURS
from hpatool.imaging import check_channel_rule
from hpatool.options import DownloadConfig
from hpatool.registry import check_name

DEFAULT_NAME = DownloadConfig.name
MAX_CONCURRENCY = 1024
#: The largest ``--max-file-size`` in MiB.
MAX_FILE_SIZE = 65536


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


@dataclass(frozen=True)
class DownloadOptions:
    """``download_external``'s options (a ``DownloadConfig``), checked and resolved (see
    :func:`check_options`)."""

    name: str
    base_url: str
    colours: tuple[str, ...]
    concurrency: int
    retries: int
    timeout: float
    backoff: float
    size: int
    channel_rule: str
    keep_raw: bool  # the raw JPEGs are kept: --keep-raw, or --size 0
    max_bytes: int  # --max-file-size in bytes: the most one file's decoded body may have
    workers: int
    limit: int | None
    shard: Shard | None


def check_options(config: DownloadConfig) -> DownloadOptions:
    """The options, checked in the order a person reads them; a ``UsageError`` for the first
    bad one. Raises the open-files limit for ``concurrency`` if it has to."""
    c = config
    check_name(c.name)
    base = check_base_url(c.base_url)
    colour_list = parse_colours(c.colours)
    _check_number(c.concurrency, 1, MAX_CONCURRENCY, "--concurrency", "parallel requests")
    _check_number(c.retries, 0, 100, "--retries", "a number of retries")
    _check_number(c.timeout, 0.01, 3600, "--timeout", "seconds")
    _check_number(c.backoff, 0, 60, "--backoff", "seconds")
    check_size(c.size, zero="keeps only the raw JPEGs")
    check_channel_rule(c.channel_rule)
    _check_number(c.max_file_size, 1, MAX_FILE_SIZE, "--max-file-size", "MiB")
    n_workers = check_workers(c.workers)
    if c.limit is not None and c.limit < 1:
        raise UsageError(f"invalid --limit {c.limit}: give 1 or more samples")
    ensure_open_files(c.concurrency)
    return DownloadOptions(
        name=c.name,
        base_url=base,
        colours=colour_list,
        concurrency=c.concurrency,
        retries=c.retries,
        timeout=c.timeout,
        backoff=c.backoff,
        size=c.size,
        channel_rule=c.channel_rule,
        keep_raw=c.keep_raw or c.size == 0,
        max_bytes=int(c.max_file_size) << 20,
        workers=n_workers,
        limit=c.limit,
        shard=Shard.parse(c.shard) if c.shard is not None else None,
    )
