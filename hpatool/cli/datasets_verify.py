"""``hpatool datasets verify``: check every sample's four channel files, a summary and the
failures; ``catalog.verify_dataset`` does the work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.catalog import VerifyReport

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.", show_default=False)]


def verify(
    name: NameArg,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Expected width and height (default: the most common size).",
            show_default=False,
            min=1,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Reader threads.", min=1, show_default=False)
    ] = None,
    failures: Annotated[
        Path | None,
        typer.Option(
            "--failures",
            metavar="FILE.csv",
            help="Also write the failures to this CSV (Id,colour,path,problem).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Check that every sample has four 8-bit greyscale channel files of one size that decode.

    Prints a summary and the failures; exits 1, with an error line, if any sample fails.

    Example: hpatool datasets verify kaggle-train --size 512
    """
    from hpatool.catalog import verify_dataset
    from hpatool.cli._console import print_json, progress_bar

    with open_registry(home) as reg, progress_bar(f"verify {name}") as progress:
        report = verify_dataset(
            reg, name, size=size, workers=workers, progress=progress, failures=failures
        )
    if json_:
        print_json(report.to_json())
    else:
        _print_verify_report(report)
    report.check()  # one error line and exit 1 if any sample failed


def _print_verify_report(report: VerifyReport) -> None:
    from hpatool.cli._console import Table, out

    console = out()
    sizes = ", ".join(f"{w}x{h}: {n:,}" for (w, h), n in report.sizes.most_common(3)) or "-"
    console.print(
        f"Verified [bold]{report.dataset}[/] in {report.root}: {report.checked:,} samples, "
        f"{report.ok:,} ok, {report.failed_samples:,} failed (sizes {sizes})"
    )
    if report.not_checked:
        why = ", ".join(f"{n:,} {r}" for r, n in sorted(report.not_checked.items()))
        console.print(f"Not checked: {why} (their files are not meant to be there)", markup=False)
    if report.failures:
        table = Table(title="Failures" + (" (first 20)" if len(report.failures) > 20 else ""))
        for col in ("Id", "colour", "problem", "path"):
            table.add_column(col)
        for f in report.failures[:20]:
            table.add_row(f.id, f.colour, f.problem, f.path)
        console.print(table)
