"""``hpatool datasets ...``: register, list, show, remove and verify datasets."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

app = typer.Typer(
    help="Register, list, show, remove and verify datasets.\n\nExample: hpatool datasets list",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.", show_default=False)]


@app.command("add")
def add(
    name: NameArg,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Label CSV with an Id column and optional Target column.",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Folder of <Id>_<colour>.png images.", show_default=False),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="train, test or external (default: train if the CSV has Target, else test).",
            show_default=False,
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Register a dataset from a label CSV, a folder of images, or both.

    With --labels the CSV lists the samples (a sample_submission.csv registers a test set);
    --root says where their images are (they may come later). Without --labels the samples are
    the <Id>_<colour>.png files found in --root.

    Example: hpatool datasets add kaggle-train --labels train.csv --root train/
    """
    from hpatool.cli._console import out
    from hpatool.datasets import add_dataset

    with open_registry(home) as reg:
        rec = add_dataset(reg, name, labels=labels, root=root, kind=kind)
    images = str(rec.root) if rec.root else "none yet (labels only)"
    out().print(
        f"Registered [bold]{rec.name}[/] ({rec.kind}): {rec.samples:,} samples, "
        f"{rec.labelled:,} labelled; images: {images}"
    )


@app.command("list")
def list_(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List registered datasets.

    Example: hpatool datasets list --json
    """
    from hpatool.cli._console import Table, out, print_json

    with open_registry(home) as reg:
        records = reg.datasets()
    if json_:
        print_json([r.to_json() for r in records])
        return
    if not records:
        out().print("No datasets yet; add one with 'hpatool datasets add NAME --labels CSV'.")
        return
    table = Table(title="Datasets")
    for col in ("name", "kind", "samples", "labelled", "images", "created"):
        table.add_column(col, justify="right" if col in ("samples", "labelled") else "left")
    for r in records:
        table.add_row(
            r.name,
            r.kind,
            f"{r.samples:,}",
            f"{r.labelled:,}",
            str(r.root) if r.root else "-",
            r.created_at,
        )
    out().print(table)


@app.command("show")
def show(name: NameArg, json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """Show one dataset: kind, counts, files, how it was made, and its folds if it is split.

    Example: hpatool datasets show kaggle-train
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.labels import CLASS_NAMES

    with open_registry(home) as reg:
        rec = reg.dataset(name)
        statuses = reg.status_counts(name)
        split = reg.split_info(name)
        fold_counts = reg.fold_class_counts(name) if split else None
        fold_sizes = sorted(reg.folds(name).values()) if split else []
    doc = rec.to_json()
    if any(k is not None for k in statuses):  # per-sample status, e.g. of a download
        doc["status"] = {k or "pending": n for k, n in sorted(statuses.items(), key=str)}
    if split is not None and fold_counts is not None:
        doc["folds"] = {
            "n": split["folds"],
            "seed": split["seed"],
            "created_at": split["created_at"],
            "sizes": [fold_sizes.count(k) for k in range(split["folds"])],
            "class_counts": fold_counts,
        }
    if json_:
        print_json(doc)
        return
    table = Table(title=f"Dataset {rec.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in doc.items():
        if key in ("provenance", "folds", "status"):
            continue
        table.add_row(
            key, "-" if value is None else (f"{value:,}" if isinstance(value, int) else str(value))
        )
    if "status" in doc:
        table.add_row("status", ", ".join(f"{n:,} {k}" for k, n in doc["status"].items()))
    for key, value in sorted(rec.provenance.items()):
        table.add_row(f"made with: {key}", str(value))
    out().print(table)
    if split is not None and fold_counts is not None:
        folds_table = Table(
            title=f"Class counts per fold ({split['folds']} folds, seed {split['seed']})"
        )
        folds_table.add_column("class")
        for k in range(split["folds"]):
            folds_table.add_column(f"fold {k}", justify="right")
        folds_table.add_column("total", justify="right")
        folds_table.add_row(
            "samples", *(f"{n:,}" for n in doc["folds"]["sizes"]), f"{sum(doc['folds']['sizes']):,}"
        )
        for c, class_name in enumerate(CLASS_NAMES):
            row = [counts[c] for counts in fold_counts]
            folds_table.add_row(f"{c} {class_name}", *(f"{v:,}" for v in row), f"{sum(row):,}")
        out().print(folds_table)


@app.command("remove")
def remove(name: NameArg, home: HomeOpt = None) -> None:
    """Remove a dataset from the registry (its image files are left where they are).

    Example: hpatool datasets remove old-train
    """
    from hpatool.cli._console import out

    with open_registry(home) as reg:
        rec = reg.remove_dataset(name)
    out().print(f"Removed dataset [bold]{rec.name}[/] ({rec.samples:,} samples); files untouched.")


@app.command("verify")
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
            help="Also write the failures to this CSV (Id,colour,path,problem).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Check that every sample has four 8-bit greyscale channel files of one size that decode.

    Prints a summary and the failures; exits 1 if any sample fails.

    Example: hpatool datasets verify kaggle-train --size 512
    """
    from hpatool._io import write_text_atomic
    from hpatool.cli._console import Table, out, print_json, progress_bar
    from hpatool.datasets import verify_dataset

    with open_registry(home) as reg, progress_bar(f"verify {name}") as progress:
        report = verify_dataset(reg, name, size=size, workers=workers, progress=progress)
    if failures is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["Id", "colour", "path", "problem"])
        writer.writerows((f.id, f.colour, f.path, f.problem) for f in report.failures)
        write_text_atomic(failures, buf.getvalue())
    if json_:
        print_json(
            {
                "dataset": report.dataset,
                "checked": report.checked,
                "ok": report.ok,
                "failed": report.failed_samples,
                "sizes": {f"{w}x{h}": n for (w, h), n in report.sizes.most_common()},
                "failures": [f.__dict__ for f in report.failures],
            }
        )
    else:
        console = out()
        sizes = ", ".join(f"{w}x{h}: {n:,}" for (w, h), n in report.sizes.most_common(3)) or "-"
        console.print(
            f"Verified [bold]{name}[/] in {report.root}: {report.checked:,} samples, "
            f"{report.ok:,} ok, {report.failed_samples:,} failed (sizes {sizes})"
        )
        if report.failures:
            table = Table(title="Failures" + (" (first 20)" if len(report.failures) > 20 else ""))
            for col in ("Id", "colour", "problem", "path"):
                table.add_column(col)
            for f in report.failures[:20]:
                table.add_row(f.id, f.colour, f.problem, f.path)
            console.print(table)
    if report.failed_samples:
        raise typer.Exit(1)
