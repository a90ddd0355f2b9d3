"""``hpatool dedup``: near-duplicate samples across datasets, by perceptual hash."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, open_registry
from hpatool.dedup import DEFAULT_MAX_DISTANCE, MAX_MAX_DISTANCE

if TYPE_CHECKING:
    from hpatool.dedup.job import DedupResult


def dedup(
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME", help="The datasets to compare, within and across.", show_default=False
        ),
    ],
    max_distance: Annotated[
        int,
        typer.Option(
            "--max-distance",
            metavar="BITS",
            help=f"Samples whose 128-bit hashes differ in at most this many bits are duplicates "
            f"(0 to {MAX_MAX_DISTANCE}; 0: identical hashes only).",
        ),
    ] = DEFAULT_MAX_DISTANCE,
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"max_distance", "clusters": [[[DATASET, ID], ...], ...], '
            '"label_conflicts"} instead of tables.',
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE.csv",
            help="Write every pair to this CSV: dataset_a,id_a,dataset_b,id_b,distance.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="Hashing processes (default: one per CPU).", show_default=False
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Find near-duplicate samples within and across datasets, and store them as clusters.

    Each sample gets a perceptual hash of its green and blue channels (64 bits each),
    computed once and kept in the registry: a rerun, or a run with one more dataset, hashes
    only what is new. Pairs within --max-distance bits are duplicates, joined into clusters
    (transitively) that are stored for the datasets given, replacing their earlier ones: run
    dedup over every dataset you use together. The report counts clusters per pair of
    datasets, the clusters whose labels disagree, and shows a few. Samples whose images are
    not there are left out (one line says how many); images that cannot be read are listed
    and exit 1, the others' hashes are kept.

    Example: hpatool dedup kaggle-train hpa-v18-512 kaggle-test --out pairs.csv
    """
    from hpatool.cli._console import print_json, progress_bar
    from hpatool.dedup.job import find_duplicates
    from hpatool.errors import WorkFailed

    with open_registry(home) as reg, progress_bar("dedup", unit="samples") as bar:
        result = find_duplicates(
            reg, names, max_distance=max_distance, workers=workers, out=out, progress=bar
        )
    if json_:
        print_json(result.as_json())
    else:
        _print_report(result)
    if result.failures:
        first = result.failures[0]
        n = len(result.failures)
        raise WorkFailed(
            f"{n:,} sample{'s' if n != 1 else ''} could not be hashed (first: dataset "
            f"{first.dataset!r}, {first.error}); the others' hashes are kept: repair or "
            "replace those images and run dedup again"
        )


def _print_report(r: DedupResult) -> None:
    from hpatool.cli._console import Table, out
    from hpatool.labels import format_target

    console = out()
    for note in r.left_out.values():
        console.print(f"note: {note}: not hashed", markup=False, soft_wrap=True)
    flat = f", {r.flat:,} with a channel too flat to hash" if r.flat else ""
    console.print(
        f"Hashed {r.hashed:,} samples ({r.reused:,} already hashed{flat}) of "
        f"{', '.join(r.names)} in {r.elapsed_s:,.1f} s",
        markup=False,
    )
    n_pairs, n_clusters = len(r.pairs), len(r.clusters)
    in_clusters = sum(len(c) for c in r.clusters)
    found = (
        f"{n_pairs:,} pair{'s' if n_pairs != 1 else ''} within {r.max_distance} bits, "
        f"{n_clusters:,} cluster{'s' if n_clusters != 1 else ''} of {in_clusters:,} samples"
        if n_pairs
        else f"no pair within {r.max_distance} bits, no duplicates"
    )
    console.print(f"Compared {r.matched:,} samples: {found}", markup=False)
    report = r.report
    if report is not None and report.pair_counts:
        table = Table(title="Clusters per dataset pair")
        for col in ("datasets", "kinds"):
            table.add_column(col)
        table.add_column("clusters", justify="right")
        for p in report.pair_counts:
            if p.within:
                table.add_row(f"within {p.a}", p.kind_a, f"{p.clusters:,}")
            else:
                table.add_row(f"{p.a} ↔ {p.b}", f"{p.kind_a} ↔ {p.kind_b}", f"{p.clusters:,}")
        console.print(table)
    if report is not None and n_clusters:
        console.print(
            f"Label conflicts: {report.label_conflicts:,} cluster"
            f"{'s' if report.label_conflicts != 1 else ''} whose labelled samples disagree",
            markup=False,
        )
        examples = Table(title=f"Example clusters (first {len(report.examples)}, conflicts first)")
        for col in ("example", "dataset", "Id", "labels"):
            examples.add_column(col)
        for k, members in enumerate(report.examples, 1):
            for m in members:
                labels = format_target(m.target) if m.target is not None else "-"
                examples.add_row(str(k), m.dataset, m.sample_id, labels)
            examples.add_section()
        console.print(examples)
    if r.out is not None:
        console.print(f"Pairs written to {r.out}", markup=False)
    if r.failures:
        table = Table(title="Could not be hashed" + (" (first 10)" if len(r.failures) > 10 else ""))
        for col in ("dataset", "Id", "error"):
            table.add_column(col)
        for f in r.failures[:10]:
            table.add_row(f.dataset, f.sample_id, f.error)
        console.print(table)
