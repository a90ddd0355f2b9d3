"""``hpatool datasets ...``: register, list, show, export and remove datasets (and ``verify``,
from ``cli/datasets_verify.py``; ``set-root``, from ``cli/datasets_root.py``; ``cache``, from
``cli/datasets_cache.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.cli.datasets_cache import cache_datasets
from hpatool.cli.datasets_root import set_root
from hpatool.cli.datasets_verify import verify

if TYPE_CHECKING:
    from hpatool.catalog import SampleListing

app = typer.Typer(
    help="Register, list, show, export, remove and verify datasets, and set their image "
    "folders.\n\nExample: hpatool datasets list",
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
            metavar="FILE.csv",
            help="Label CSV with an Id column and optional Target column (names matched "
            "case-insensitively).",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", metavar="DIR", help="Folder of <Id>_<colour>.png images.", show_default=False
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            metavar="train|test|external",
            help="train, test or external (default: train if the CSV has Target, else test).",
            show_default=False,
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Register a dataset from a label CSV, a folder of images, or both.

    With --labels the CSV lists the samples (a sample_submission.csv registers a test set);
    --root says where their images are (they may come later, attached with 'hpatool datasets
    set-root NAME DIR'). Without --labels the samples are the <Id>_<colour>.png files found in
    --root.

    Example: hpatool datasets add kaggle-train --labels train.csv --root train/
    """
    from hpatool.catalog import register_dataset
    from hpatool.cli._console import err, out

    with open_registry(home) as reg:
        added = register_dataset(reg, name, labels=labels, root=root, kind=kind)
    rec = added.record
    images = str(rec.root) if rec.root else "none yet (labels only)"
    out().print(
        f"Registered [bold]{rec.name}[/] ({rec.kind}): {rec.samples:,} samples, "
        f"{rec.labelled:,} labelled; images: {images}"
    )
    if rec.root is None:
        out().print(
            f"Attach its images later with 'hpatool datasets set-root {rec.name} DIR'",
            markup=False,
        )
    if added.id_column is not None:
        target = repr(added.target_column) if added.target_column else "none (unlabelled)"
        if added.predictions_column:
            target = (
                f"none (unlabelled; {added.predictions_column!r} holds a submission's "
                "predictions, not labels)"
            )
        out().print(
            f"Columns used: Id {added.id_column!r}, Target {target}", markup=False, soft_wrap=True
        )
    if added.label_hint:
        err().print(f"warning: {added.label_hint}", markup=False, soft_wrap=True)


@app.command("list")
def list_(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List registered datasets.

    A dataset whose registry row cannot be used (edited by hand) is listed with a warning
    that names the row (and a "problem" key in --json); the others are unaffected.

    Example: hpatool datasets list --json
    """
    from hpatool.cli._console import Table, err, out, print_json

    with open_registry(home) as reg:
        records = reg.datasets()
    for r in records:
        if r.problem:
            err().print(f"warning: {r.problem}", markup=False, soft_wrap=True)
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
            r.name + (" (bad row)" if r.problem else ""),
            r.kind,
            f"{r.samples:,}",
            f"{r.labelled:,}",
            str(r.root) if r.root else "-",
            r.created_at,
        )
    out().print(table)


@app.command("show")
def show(
    name: NameArg,
    samples: Annotated[
        bool,
        typer.Option(
            "--samples",
            help="List every sample instead: Id, status, labels (class numbers), and fold if "
            "split. Plain columns (or one JSON object per sample with --json), for grep and "
            "scripts.",
        ),
    ] = False,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="With --samples: only the samples with this status (done, failed, missing, "
            "pending...).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Show one dataset: kind, counts, files, how it was made, its per-status sample counts,
    and its folds if it is split. --samples lists each sample with its status, labels and fold.

    Example: hpatool datasets show hpa-v18 --samples --status failed
    """
    from hpatool.catalog import describe_dataset, list_samples
    from hpatool.cli._console import print_json
    from hpatool.errors import UsageError

    if status is not None and not samples:
        raise UsageError("--status filters the list of --samples; add --samples")
    if samples:
        with open_registry(home) as reg:
            listing = list_samples(reg, name, status=status)
        _write_samples(listing, json_)
        return
    with open_registry(home) as reg:
        doc = describe_dataset(reg, name)
    if json_:
        print_json(doc)
        return
    _print_dataset(doc)
    if "folds" in doc:
        _print_folds(doc["folds"])
    if "duplicates" in doc:
        _print_duplicates(doc["duplicates"])


def _print_duplicates(dup: dict[str, int]) -> None:
    from hpatool.cli._console import out

    line = (
        f"Duplicates (hpatool dedup): {dup['clusters']:,} cluster(s) of 2+ of its samples "
        f"({dup['samples_in_clusters']:,} samples); {dup['samples_with_duplicates']:,} samples "
        "have a duplicate in this or another dataset"
    )
    if "kept_together" in dup:
        line += f"; {dup['kept_together']:,} cluster(s) kept together in one fold"
        if dup["across_folds"]:
            line += (
                f", {dup['across_folds']:,} across folds (split before dedup: run 'hpatool "
                "split' again)"
            )
    out().print(line, markup=False)


@app.command("export")
def export(
    name: NameArg,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE.csv",
            help="Write the CSV to this file (default: standard output).",
            show_default=False,
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Write a dataset as CSV: Id,Target,fold,cluster, in the dataset's order.

    fold is the sample's fold ('hpatool split'), cluster the number of its duplicate cluster
    ('hpatool dedup'; shared with samples of other datasets); each is empty where there is
    none. For notebooks and other tools.

    Example: hpatool datasets export kaggle-train --out kaggle-train-folds.csv
    """
    import sys

    from hpatool._io import csv_text, write_csv
    from hpatool.catalog import export_rows
    from hpatool.cli._console import err
    from hpatool.outputs import check_output

    header = ("Id", "Target", "fold", "cluster")
    with open_registry(home) as reg:
        target = check_output(out_path, "--out", reg) if out_path is not None else None
        rows = export_rows(reg, name)
    if target is None:
        sys.stdout.write(csv_text(header, rows))
        return
    write_csv(target, header, rows)
    err().print(f"Wrote {len(rows):,} samples of {name} to {target}", markup=False)


def _write_samples(listing: SampleListing, json_: bool) -> None:
    """The samples as plain aligned columns (or a JSON array, one object per line), written in
    blocks: a rich table of 74k rows would take most of a minute."""
    import json
    import sys

    write = sys.stdout.write
    rows, split = listing.rows, listing.split
    block = 2000
    if json_:
        write("[\n" if rows else "[")
        for start in range(0, len(rows), block):
            chunk = rows[start : start + block]
            last = start + block >= len(rows)
            lines = [json.dumps(r.to_json(split)) for r in chunk]
            write(",\n".join(lines) + ("\n" if last else ",\n"))
        write("]\n")
        return
    width = max([len("Id"), *(len(r.id) for r in rows)])
    swidth = max([len("status"), *(len(r.status or "-") for r in rows)])
    lwidth = max([len("labels"), *(len(_labels_text(r.labels)) for r in rows)])
    header = f"{'Id':<{width}}  {'status':<{swidth}}  {'labels':<{lwidth}}"
    write((f"{header}  fold" if split else header.rstrip()) + "\n")
    for start in range(0, len(rows), block):
        lines = []
        for r in rows[start : start + block]:
            line = f"{r.id:<{width}}  {r.status or '-':<{swidth}}  "
            line += f"{_labels_text(r.labels):<{lwidth}}"
            if split:
                line += f"  {'-' if r.fold is None else r.fold}"
            lines.append(line.rstrip() + "\n")
        write("".join(lines))


def _labels_text(labels: tuple[int, ...] | None) -> str:
    return "-" if labels is None else " ".join(map(str, labels))


def _print_dataset(doc: dict[str, Any]) -> None:
    from hpatool.cli._console import Table, out

    table = Table(title=f"Dataset {doc['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in doc.items():
        if key in ("provenance", "folds", "status", "duplicates", "cache"):
            continue
        table.add_row(
            key, "-" if value is None else (f"{value:,}" if isinstance(value, int) else str(value))
        )
    if "status" in doc:
        table.add_row("status", ", ".join(f"{n:,} {k}" for k, n in doc["status"].items()))
    for key, value in sorted(doc["provenance"].items()):
        table.add_row(f"made with: {key}", str(value))
    if "cache" in doc:
        c = doc["cache"]
        state = "complete" if c["complete"] else "incomplete (rerun 'hpatool datasets cache')"
        table.add_row(
            "decoded cache",
            f"{c['samples']:,} samples, {c['bytes'] / 2**30:,.2f} GiB, {state}: {c['folder']}",
        )
    out().print(table)


def _print_folds(folds: dict[str, Any]) -> None:
    from hpatool.cli._console import Table, out
    from hpatool.labels import CLASS_NAMES

    table = Table(title=f"Class counts per fold ({folds['n']} folds, seed {folds['seed']})")
    table.add_column("class")
    for k in range(folds["n"]):
        table.add_column(f"fold {k}", justify="right")
    table.add_column("total", justify="right")
    table.add_row("samples", *(f"{n:,}" for n in folds["sizes"]), f"{sum(folds['sizes']):,}")
    for c, class_name in enumerate(CLASS_NAMES):
        row = [counts[c] for counts in folds["class_counts"]]
        table.add_row(f"{c} {class_name}", *(f"{v:,}" for v in row), f"{sum(row):,}")
    out().print(table)


@app.command("remove")
def remove(name: NameArg, home: HomeOpt = None) -> None:
    """Remove a dataset from the registry (its image files are left where they are).

    Example: hpatool datasets remove old-train
    """
    from hpatool.catalog import remove_dataset
    from hpatool.cli._console import out

    with open_registry(home) as reg:
        rec = remove_dataset(reg, name)
    out().print(f"Removed dataset [bold]{rec.name}[/] ({rec.samples:,} samples); files untouched.")


app.command("verify")(verify)  # datasets verify: its own module, cli/datasets_verify.py
app.command("set-root")(set_root)  # datasets set-root: its own module, cli/datasets_root.py
app.command("cache")(cache_datasets)  # datasets cache: its own module, cli/datasets_cache.py
