"""``hpatool download-external``: the HPA v18 external images, converted on the fly."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.cli.preprocess import RuleOpt, WorkersOpt
from hpatool.errors import WorkFailed
from hpatool.options import DownloadConfig

if TYPE_CHECKING:
    from hpatool.download import DownloadProgress, DownloadProgressFn, DownloadSummary

LabelsOpt = Annotated[
    Path,
    typer.Option(
        "--labels",
        metavar="FILE.csv",
        help="Label CSV of the external samples (Id,Target), e.g. HPAv18RBGY_wodpl.csv.",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="DIR",
        help="Folder for <Id>_<colour>.png (and raw/<Id>_<colour>.jpg).",
        show_default=False,
    ),
]
NameOpt = Annotated[
    str, typer.Option("--name", metavar="NAME", help="Dataset to register or update.")
]
BaseUrlOpt = Annotated[
    str,
    typer.Option(
        "--base-url", metavar="URL", help="Image server: <base>/<antibody>/<rest>_<colour>.jpg."
    ),
]
ColorsOpt = Annotated[
    str, typer.Option("--colors", metavar="COLORS", help="Stains to get, comma-separated.")
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Requests in flight at once.")]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries",
        help="Retries per file for timeouts, connection errors, 5xx, 429 and bad bodies (a 403 "
        "is asked once per run; a 404 is final, see --retry-missing).",
    ),
]
RetryMissingOpt = Annotated[
    bool,
    typer.Option(
        "--retry-missing",
        help="Ask again for the samples an earlier run found missing on the server (404/410); "
        "without it a rerun skips them without a request.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Seconds without progress (connect or read) before "
        "a request is retried; a whole file may take 10x this.",
    ),
]
SizeOpt = Annotated[
    int,
    typer.Option("--size", help="Output width and height in pixels (square).", show_default=True),
]
KeepRawOpt = Annotated[
    bool, typer.Option("--keep-raw", help="Also keep the JPEGs as served in DIR/raw/.")
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        help="Only the first N samples (CSV order, after --shard); for a trial run.",
        show_default=False,
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="I/N: this machine's share (1-based I) of the ids, chosen by a hash of the id.",
        show_default=False,
    ),
]
MaxFileSizeOpt = Annotated[
    int,
    typer.Option(
        "--max-file-size",
        metavar="MIB",
        help="The most MiB one file may have, decoded; a larger (or endless) body is a failed "
        "file, not retried (HPA JPEGs are 40-300 kB at 2048 px).",
    ),
]
BackoffOpt = Annotated[
    float,
    typer.Option(
        "--backoff",
        metavar="SECONDS",
        help="Advanced: base of the exponential retry backoff "
        "in seconds (full jitter; Retry-After overrides it).",
    ),
]


@contextlib.contextmanager
def _download_bar() -> Iterator[DownloadProgressFn]:
    """The progress bar: samples, files/s, MB/s, retries, failures, ETA (on a terminal)."""
    from hpatool.cli._console import progress_bar

    with progress_bar("download", unit="samples", compact=True) as bar:

        def update(p: DownloadProgress) -> None:
            finished = p.samples_done + p.samples_failed + p.samples_missing
            bar.update(finished, p.samples_total, stats=_stats(p))

        yield update


def _stats(p: DownloadProgress) -> str:
    """The bar's stats: files/s and MB/s as the summary counts them (files downloaded, since
    the download began), then retries and failures (when there are any)."""
    parts = [f"{p.files_per_s:,.0f} files/s", f"{p.mb_per_s:,.1f} MB/s"]
    if p.retries:
        parts.append(f"{p.retries:,} retries")
    if p.samples_failed:
        parts.append(f"[red]{p.samples_failed:,} failed[/]")
    if p.samples_missing:
        parts.append(f"{p.samples_missing:,} missing")
    return " · ".join(parts)


def download_external(
    labels: LabelsOpt,
    out: OutOpt,
    name: NameOpt = DownloadConfig.name,
    base_url: BaseUrlOpt = DownloadConfig.base_url,
    colors: ColorsOpt = DownloadConfig.colours,
    concurrency: ConcurrencyOpt = DownloadConfig.concurrency,
    retries: RetriesOpt = DownloadConfig.retries,
    timeout: TimeoutOpt = DownloadConfig.timeout,
    size: SizeOpt = DownloadConfig.size,
    channel_rule: RuleOpt = DownloadConfig.channel_rule,
    keep_raw: KeepRawOpt = DownloadConfig.keep_raw,
    workers: WorkersOpt = DownloadConfig.workers,
    limit: LimitOpt = DownloadConfig.limit,
    shard: ShardOpt = DownloadConfig.shard,
    backoff: BackoffOpt = DownloadConfig.backoff,
    max_file_size: MaxFileSizeOpt = DownloadConfig.max_file_size,
    retry_missing: RetryMissingOpt = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Download the HPA v18 external images, converted to 512x512 PNGs on the fly; resumable.

    Fetches <base>/<antibody>/<rest>_<colour>.jpg for every Id of the label CSV (with
    --concurrency requests in flight over one connection pool), checks each body (status,
    type, length, decodes) before renaming it into place, and converts it in a process pool
    to DIR/<Id>_<colour>.png, 8-bit greyscale, --size square, with the --channel-rule.
    --size 0 keeps only the raw JPEGs, in DIR/raw/. The samples are registered as dataset
    --name (kind external) with a per-sample status; a rerun, or a run after Ctrl-C or a crash,
    fetches only what is missing. Failures go to DIR/failures.csv. Those a rerun may fix
    (timeouts, 5xx, bad bodies, 403) exit 1: rerun the same command. A 404 (or 410) is final:
    the sample is recorded as missing on the server and skipped by reruns unless
    --retry-missing; a run whose only failures are 404s exits 0 with a warning. A run whose
    first requests all get 404 stops early, recording nothing: check --base-url.

    Example: hpatool download-external --labels HPAv18RBGY_wodpl.csv --out data/hpa-v18 --shard 1/4
    """
    from hpatool.download import MissingOnServer
    from hpatool.download import download_external as run_download

    config = DownloadConfig(
        name=name,
        base_url=base_url,
        colours=colors,
        concurrency=concurrency,
        retries=retries,
        timeout=timeout,
        size=size,
        channel_rule=channel_rule,
        keep_raw=keep_raw,
        workers=workers,
        limit=limit,
        shard=shard,
        backoff=backoff,
        max_file_size=max_file_size,
    )
    with open_registry(home) as reg, _download_bar() as progress:
        summary = run_download(
            reg, labels, out, config, progress=progress, retry_missing=retry_missing
        )
    _print_summary(summary, json_)
    if summary.missing:
        warnings.warn(_missing_line(summary), MissingOnServer, stacklevel=1)
    if summary.failed:
        raise WorkFailed(
            f"{summary.failed:,} of {summary.samples:,} samples failed; see "
            f"{summary.failures_csv}; rerun the same command to retry them"
        )


def _missing_line(s: DownloadSummary) -> str:
    """The warning for samples missing on the server (exit 0 when nothing else failed)."""
    samples = "sample" if s.missing == 1 else "samples"
    skipped = f" ({s.skipped_missing:,} known from an earlier run)" if s.skipped_missing else ""
    where = f"; listed in {s.failures_csv}" if s.failures_csv else ""
    return (
        f"{s.missing:,} {samples} missing on the server (404){skipped}, skipped on reruns; "
        f"pass --retry-missing to ask again{where}"
    )


def _print_summary(s: DownloadSummary, json_: bool) -> None:
    from hpatool.cli._console import Table, out, print_json

    if json_:
        print_json(
            {
                "dataset": s.dataset,
                "out": str(s.out_dir),
                "root": str(s.root),
                "samples": s.samples,
                "already_done": s.already_done,
                "completed": s.completed,
                "failed": s.failed,
                "missing": s.missing,
                "skipped_missing": s.skipped_missing,
                "files_fetched": s.files_fetched,
                "files_converted": s.files_converted,
                "bytes": s.bytes,
                "requests": s.requests,
                "retries": s.retries,
                "elapsed_s": round(s.elapsed_s, 3),
                "failures_csv": str(s.failures_csv) if s.failures_csv else None,
                "failures": [f.__dict__ for f in s.failures],
            }
        )
        return
    console = out()
    table = Table(title=f"download-external -> dataset {s.dataset}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("samples in this run", f"{s.samples:,}"),
        ("already complete (no request)", f"{s.already_done:,}"),
        ("completed now", f"{s.completed:,}"),
        ("failed (a rerun retries them)", f"{s.failed:,}"),
        ("missing on the server (404)", _missing_cell(s)),
        ("files downloaded", f"{s.files_fetched:,}"),
        ("files converted from raw on disk", f"{s.files_converted:,}"),
        ("data", f"{s.bytes / 1e6:,.1f} MB"),
        ("requests / retries", f"{s.requests:,} / {s.retries:,}"),
        ("time", f"{s.elapsed_s:,.1f} s ({s.files_per_s:,.0f} files/s, {s.mb_per_s:,.1f} MB/s)"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"Images in {s.root}")
    if s.failures:
        _print_failures(s)


def _missing_cell(s: DownloadSummary) -> str:
    """The summary's count of samples missing on the server, and how many were skipped."""
    return f"{s.missing:,}" + (f" ({s.skipped_missing:,} skipped)" if s.skipped_missing else "")


def _print_failures(s: DownloadSummary) -> None:
    from hpatool.cli._console import Table, out

    console = out()
    shown = s.failures[:10]
    fails = Table(title="Failures" + (f" (first {len(shown)})" if len(s.failures) > 10 else ""))
    for col in ("Id", "colour", "status", "error"):
        fails.add_column(col)
    for f in shown:
        fails.add_row(f.id, f.colour, str(f.status or "-"), f.error)
    console.print(fails)
    if s.failed:
        samples = "sample" if s.failed == 1 else "samples"
        n_files = len(s.failures) - s.missing_files
        files = "file" if n_files == 1 else "files"
        console.print(
            f"{s.failed:,} {samples} failed ({n_files:,} {files}); see "
            f"{s.failures_csv}. Rerun the same command to retry them."
        )
