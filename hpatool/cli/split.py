"""``hpatool split``: multilabel-stratified folds of a dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.options import SplitConfig

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Dataset to split (labelled).", show_default=False)
]
FoldsOpt = Annotated[int, typer.Option("--folds", help="Number of folds.", min=2, max=20)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed of the split.", min=0)]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing split with other --folds/--seed.")
]
AllSamplesOpt = Annotated[
    bool,
    typer.Option(
        "--all-samples",
        help="Split every registered sample, also those whose images are not there (yet); "
        "by default only the samples with images are split.",
    ),
]


def split(
    name: NameArg,
    folds: FoldsOpt = SplitConfig.folds,
    seed: SeedOpt = SplitConfig.seed,
    force: ForceOpt = False,
    all_samples: AllSamplesOpt = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Split a dataset into multilabel-stratified folds (iterative stratification).

    Every class with at least --folds samples lands in every fold. The folds are stored in the
    registry; 'hpatool train --fold K' validates on fold K, and 'hpatool datasets show NAME'
    shows the class counts per fold. Only the samples whose images are there are split
    (--all-samples: every registered one), and the members of a duplicate cluster found by
    'hpatool dedup' share a fold.

    Example: hpatool split kaggle-train --folds 5 --seed 0
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.data.split import split_dataset
    from hpatool.labels import CLASS_NAMES

    with open_registry(home) as reg:
        result = split_dataset(
            reg, name, folds=folds, seed=seed, force=force, all_samples=all_samples
        )
    if json_:
        print_json(
            {
                "dataset": result.dataset,
                "folds": result.folds,
                "seed": result.seed,
                "samples": result.samples,
                "fold_sizes": result.fold_sizes,
                "class_counts": result.class_counts,
                "replaced": result.replaced,
                "uneven": result.uneven,
                "left_out": result.left_out,
                "clusters_kept": result.clusters_kept,
            }
        )
        return
    console = out()
    sizes = ", ".join(f"{n:,}" for n in result.fold_sizes)
    console.print(
        f"Split [bold]{name}[/] into {result.folds} folds (seed {result.seed}): "
        f"{result.samples:,} samples, fold sizes {sizes}."
    )
    if result.clusters_kept:
        console.print(
            f"Kept {result.clusters_kept:,} duplicate cluster(s) (hpatool dedup) together, "
            "each in one fold."
        )
    if result.left_out:
        why = ", ".join(f"{n:,} {r}" for r, n in sorted(result.left_out.items()))
        console.print(
            f"Left out {sum(result.left_out.values()):,} samples whose images are not there "
            f"({why}): they get no fold and do not train; run this split again once they "
            "are there (runs on the old folds cannot be resumed then), or pass --all-samples"
        )
    totals = [sum(counts[c] for counts in result.class_counts) for c in range(len(CLASS_NAMES))]
    rare = sorted((c for c in range(len(CLASS_NAMES)) if totals[c]), key=lambda c: totals[c])[:5]
    table = Table(title="Rarest classes per fold")
    table.add_column("class")
    for k in range(result.folds):
        table.add_column(f"fold {k}", justify="right")
    for c in rare:
        table.add_row(f"{c} {CLASS_NAMES[c]}", *(str(counts[c]) for counts in result.class_counts))
    console.print(table)
    if result.uneven:
        names = ", ".join(CLASS_NAMES[c] for c in result.uneven)
        console.print(f"[yellow]warning:[/] some folds have no sample of: {names}")
