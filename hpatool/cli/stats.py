"""``hpatool stats``: label statistics of registered datasets, as tables, JSON or a bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.stats import DatasetStats


NamesArg = Annotated[
    list[str],
    typer.Argument(metavar="NAME", help="One or more dataset names.", show_default=False),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png",
        help="Write a bar chart of class counts (log axis) to this PNG, with the 1% rare "
        "line of each dataset; a class without any sample is marked 0.",
        show_default=False,
    ),
]
ShareOpt = Annotated[
    bool,
    typer.Option(
        "--share",
        help="With --plot: draw each class's share of the labelled samples (%) instead of "
        "its count, so datasets of different sizes compare; one 1% rare line.",
    ),
]
AllSamplesOpt = Annotated[
    bool,
    typer.Option(
        "--all-samples",
        help="Count the labels of every registered sample, also those whose images are "
        "not there (not downloaded, failed, missing files).",
    ),
]
PairsOpt = Annotated[int, typer.Option("--pairs", help="How many label pairs to list.", min=0)]


def stats(
    names: NamesArg,
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    share: ShareOpt = False,
    all_samples: AllSamplesOpt = False,
    top_pairs: PairsOpt = 10,
    home: HomeOpt = None,
) -> None:
    """Label statistics: class counts and shares side by side, labels per sample, label pairs.

    Classes under 1% of the labelled samples are highlighted as rare. A dataset without
    labels (a test set) has nothing to count: it is left out, with a note.

    Like train, stats describes the samples that can be used: in a dataset with an image
    folder or download statuses, samples whose images are not there are left out, and one
    line says how many and why (--all-samples counts them all). A dataset registered from a
    label CSV alone is counted whole.

    Example: hpatool stats kaggle-train hpa-v18 --plot classes.png --share
    """
    from hpatool.cli._console import out, print_json
    from hpatool.stats import nothing_to_count, stats_json, stats_report

    with open_registry(home) as reg:
        all_stats = stats_report(reg, names, plot=plot, share=share, all_samples=all_samples)
    if json_:
        print_json(stats_json(all_stats))
        return
    for s in all_stats:
        if s.left_out_note and s.has_labels:
            out().print(
                f"note: {s.left_out_note}; --all-samples counts all registered labels",
                markup=False,
                soft_wrap=True,
            )
    labelled = [s for s in all_stats if s.has_labels]
    if not labelled:
        for s in all_stats:
            out().print(nothing_to_count(s), markup=False, soft_wrap=True)
        return
    _print_class_counts(labelled)
    _print_labels_per_sample(labelled)
    _print_pairs(labelled, top_pairs)
    for s in all_stats:
        if not s.has_labels:
            why = (
                "has no labelled sample with its images"
                if s.registered_labelled
                else "has no labels (a test set)"
            )
            out().print(
                f"note: dataset {s.name!r} {why}: left out of the tables"
                + (" and the plot" if plot is not None else ""),
                markup=False,
                soft_wrap=True,
            )
    if plot is not None:
        out().print(f"Plot written to {plot.expanduser()}")


def _print_class_counts(all_stats: list[DatasetStats]) -> None:
    from hpatool.cli._console import Table, out
    from hpatool.labels import CLASS_NAMES
    from hpatool.stats import RARE_SHARE

    table = Table(title="Class counts (rare classes, < 1% of labelled samples, in red)")
    table.add_column("#", justify="right")
    table.add_column("class")
    for s in all_stats:
        table.add_column(f"{s.name}\ncount", justify="right")
        table.add_column("share", justify="right")
    for c, cname in enumerate(CLASS_NAMES):
        row = [str(c), cname]
        rare = False
        for s in all_stats:
            share = s.share(c)
            is_rare = s.labelled > 0 and share < RARE_SHARE
            rare = rare or is_rare
            style = "[red]" if is_rare else ""
            row += [f"{style}{s.class_counts[c]:,}", f"{style}{share:.2%}"]
        table.add_row(*row, style="bold" if rare else None)
    table.add_section()
    table.add_row(
        "",
        "samples / labelled",
        *[v for s in all_stats for v in (f"{s.samples:,}", f"{s.labelled:,}")],
    )
    out().print(table)


def _print_labels_per_sample(all_stats: list[DatasetStats]) -> None:
    from hpatool.cli._console import Table, out

    hist = Table(title="Labels per sample")
    hist.add_column("labels", justify="right")
    keys = sorted({int(k) for s in all_stats for k in s.labels_per_sample})
    for s in all_stats:
        hist.add_column(s.name, justify="right")
    for k in keys:
        hist.add_row(str(k), *[f"{s.labels_per_sample.get(str(k), 0):,}" for s in all_stats])
    out().print(hist)


def _print_pairs(all_stats: list[DatasetStats], top_pairs: int) -> None:
    from hpatool.cli._console import Table, out
    from hpatool.labels import CLASS_NAMES

    for s in all_stats:
        if not s.pairs or top_pairs == 0:
            continue
        pairs = Table(title=f"Most frequent label pairs: {s.name}")
        pairs.add_column("pair")
        pairs.add_column("samples", justify="right")
        for (a, b), n in s.pairs.most_common(top_pairs):
            pairs.add_row(f"{a} {CLASS_NAMES[a]} + {b} {CLASS_NAMES[b]}", f"{n:,}")
        out().print(pairs)
