"""``hpatool download-external`` and ``hpatool preprocess``: external data in, channel PNGs out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.errors import UsageError, WorkFailed

if TYPE_CHECKING:
    from hpatool.download import DownloadProgress, DownloadProgressFn, DownloadSummary
    from hpatool.preprocess import PreprocessSummary

SizeOpt = Annotated[
    int,
    typer.Option("--size", help="Output width and height in pixels (square).", show_default=True),
]
RuleOpt = Annotated[
    str,
    typer.Option(
        "--channel-rule",
        help="How an RGB image becomes one greyscale stain: 'stain' takes the stain's own band "
        "(red<-R, green<-G, blue<-B, yellow<-R), 'luma' is PIL convert('L').",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", help="Conversion processes (default: one per CPU).", show_default=False
    ),
]


@contextlib.contextmanager
def _download_bar() -> Iterator[DownloadProgressFn]:
    """A rich progress bar on stderr: samples, files/s, MB/s, retries, failures, ETA.

    Drawn only when stderr is a terminal (rich is imported here as the one allowed exception
    to "_console.py only", for these columns).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from hpatool.cli._console import err

    console = err()
    bar = Progress(
        TextColumn("[bold]download"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        TextColumn("samples {task.fields[stats]} eta"),
        TimeRemainingColumn(compact=True),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task("download", total=None, stats="")

    def update(p: DownloadProgress) -> None:
        secs = max(p.elapsed_s, 1e-9)
        failed = f"[red]{p.samples_failed:,} failed[/]" if p.samples_failed else "0 failed"
        stats = (
            f"· {p.files_done / secs:,.0f} files/s · {p.bytes / 1e6 / secs:,.1f} MB/s · "
            f"{p.retries:,} retries · {failed} ·"
        )
        bar.update(
            task, completed=p.samples_done + p.samples_failed, total=p.samples_total, stats=stats
        )

    with bar:
        yield update


def download_external(
    labels: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="Label CSV of the external samples (Id,Target), e.g. HPAv18RBGY_wodpl.csv.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for <Id>_<colour>.png (and raw/<Id>_<colour>.jpg).",
            show_default=False,
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Dataset to register or update.")] = "hpa-v18",
    base_url: Annotated[
        str, typer.Option("--base-url", help="Image server: <base>/<antibody>/<rest>_<colour>.jpg.")
    ] = "http://v18.proteinatlas.org/images",
    colors: Annotated[
        str, typer.Option("--colors", help="Stains to get, comma-separated.")
    ] = "red,green,blue,yellow",
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Requests in flight at once.")
    ] = 32,
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            help="Retries per file for timeouts, connection errors, "
            "5xx, 429 and bad bodies (403/404 are never retried).",
        ),
    ] = 5,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds without progress (connect or read) before "
            "a request is retried; a whole file may take 10x this.",
        ),
    ] = 30.0,
    size: SizeOpt = 512,
    channel_rule: RuleOpt = "stain",
    keep_raw: Annotated[
        bool, typer.Option("--keep-raw", help="Also keep the JPEGs as served in DIR/raw/.")
    ] = False,
    workers: WorkersOpt = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Only the first N samples (CSV order, after --shard); for a trial run.",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="I/N: this machine's share (1-based I) of the ids, chosen by a hash of the id.",
            show_default=False,
        ),
    ] = None,
    backoff: Annotated[
        float,
        typer.Option(
            "--backoff",
            help="Advanced: base of the exponential retry backoff "
            "in seconds (full jitter; Retry-After overrides it).",
        ),
    ] = 0.5,
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
    fetches only what is missing. Permanent failures go to DIR/failures.csv and exit 1.

    Example: hpatool download-external --labels HPAv18RBGY_wodpl.csv --out data/hpa-v18 --shard 1/4
    """
    from hpatool.download import download_external as run_download

    with open_registry(home) as reg, _download_bar() as progress:
        summary = run_download(
            reg,
            labels,
            out,
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
            progress=progress,
        )
    _print_download(summary, json_)
    if summary.failed:
        raise WorkFailed(
            f"{summary.failed:,} of {summary.samples:,} samples failed; see "
            f"{summary.failures_csv}; rerun the same command to retry them"
        )


def _print_download(s: DownloadSummary, json_: bool) -> None:
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
        ("failed", f"{s.failed:,}"),
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
        shown = s.failures[:10]
        fails = Table(title="Failures" + (f" (first {len(shown)})" if len(s.failures) > 10 else ""))
        for col in ("Id", "colour", "status", "error"):
            fails.add_column(col)
        for f in shown:
            fails.add_row(f.id, f.colour, str(f.status or "-"), f.error)
        console.print(fails)
        samples = "sample" if s.failed == 1 else "samples"
        files = "file" if len(s.failures) == 1 else "files"
        console.print(
            f"{s.failed:,} {samples} failed ({len(s.failures):,} {files}); see "
            f"{s.failures_csv}. Rerun the same command to retry them."
        )


def preprocess(
    src_dir: Annotated[
        Path,
        typer.Argument(
            metavar="SRC_DIR",
            help="Folder of <Id>_<colour>.jpg/.png/.tif images.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for the <Id>_<colour>.png files.", show_default=False),
    ],
    size: Annotated[
        int,
        typer.Option(
            "--size", help="Output width and height in pixels (0: keep each image's size)."
        ),
    ] = 512,
    channel_rule: RuleOpt = "stain",
    workers: WorkersOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Register the output as this dataset (its lineage is recorded). Default: "
            "<source dataset>-<size> when SRC_DIR is a registered dataset's folder, else the "
            "--out folder's name.",
            show_default=False,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Label CSV giving the registered dataset's samples and labels.",
            show_default=False,
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register", help="Register the output as a dataset (see --name)."
        ),
    ] = True,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Convert images on disk to 8-bit greyscale <Id>_<colour>.png channel files.

    Sources are <Id>_<colour>.jpg (RGB, one stain each: --channel-rule picks the band),
    .png (8- or 16-bit greyscale, or RGB) or .tif; 16-bit images are stretched to 8 bits
    over their own range. JPEGs are decoded at reduced size (draft mode) before the final
    LANCZOS resize. Idempotent: outputs already there are kept. Failures go to
    DIR/failures.csv and exit 1; the other files are still converted.

    Example: hpatool preprocess data/hpa-v18/raw --out data/hpa-v18-512 --name hpa-v18-512
    """
    from hpatool.cli._console import progress_bar
    from hpatool.preprocess import preprocess_images

    if not register and (name is not None or labels is not None):
        raise UsageError("--no-register leaves nothing for --name or --labels; drop one of them")
    with contextlib.ExitStack() as stack:
        reg = stack.enter_context(open_registry(home)) if register else None
        progress = stack.enter_context(progress_bar("preprocess", unit="files"))
        summary = preprocess_images(
            src_dir,
            out,
            size=size,
            channel_rule=channel_rule,
            workers=workers,
            registry=reg,
            name=name,
            labels=labels,
            progress=progress,
        )
    _print_preprocess(summary, json_)
    if summary.failed:
        raise WorkFailed(
            f"{summary.failed:,} files could not be converted; see {summary.failures_csv}"
        )


def _print_preprocess(s: PreprocessSummary, json_: bool) -> None:
    from hpatool.cli._console import Table, out, print_json

    if json_:
        print_json(
            {
                "source": str(s.src_dir),
                "out": str(s.out_dir),
                "files": s.files,
                "converted": s.converted,
                "skipped": s.skipped,
                "failed": s.failed,
                "samples": s.samples,
                "complete_samples": s.complete_samples,
                "dataset": s.dataset.name if s.dataset else None,
                "elapsed_s": round(s.elapsed_s, 3),
                "failures_csv": str(s.failures_csv) if s.failures_csv else None,
                "failures": [f.__dict__ for f in s.failures],
            }
        )
        return
    console = out()
    console.print(
        f"Preprocessed {s.files:,} files from {s.src_dir} into {s.out_dir}: "
        f"{s.converted:,} converted, {s.skipped:,} already there, {s.failed:,} failed "
        f"({s.complete_samples:,} of {s.samples:,} samples complete) in {s.elapsed_s:,.1f} s"
    )
    if s.dataset is not None:
        parent = f", derived from {s.dataset.parent}" if s.dataset.parent else ""
        console.print(
            f"Registered [bold]{s.dataset.name}[/] ({s.dataset.kind}, "
            f"{s.dataset.samples:,} samples{parent})"
        )
    if s.failures:
        table = Table(title="Failures" + (" (first 10)" if len(s.failures) > 10 else ""))
        for col in ("Id", "colour", "error"):
            table.add_column(col)
        for f in s.failures[:10]:
            table.add_row(f.id, f.colour, f.error)
        console.print(table)
        files = "file" if s.failed == 1 else "files"
        console.print(f"{s.failed:,} {files} failed; see {s.failures_csv}")
