"""``hpatool stats`` and ``hpatool show``: looking at labels and images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry


def stats(
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME", help="One or more dataset names.", show_default=False),
    ],
    json_: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write a bar chart of class counts (log axis) to this PNG.",
            show_default=False,
        ),
    ] = None,
    top_pairs: Annotated[
        int, typer.Option("--pairs", help="How many label pairs to list.", min=0)
    ] = 10,
    home: HomeOpt = None,
) -> None:
    """Label statistics: class counts and shares side by side, labels per sample, label pairs.

    Classes under 1% of the labelled samples are highlighted as rare.

    Example: hpatool stats kaggle-train hpa-v18 --plot classes.png
    """
    from hpatool._io import figure_file
    from hpatool.cli._console import Table, out, print_json
    from hpatool.labels import CLASS_NAMES
    from hpatool.stats import RARE_SHARE, dataset_stats, plot_class_counts, stats_json

    if plot is not None:
        plot = figure_file(plot, "--plot")
    with open_registry(home) as reg:
        all_stats = [dataset_stats(reg, n) for n in names]
    if plot is not None:
        plot_class_counts(all_stats, plot)
    if json_:
        print_json(stats_json(all_stats))
        return
    console = out()
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
    console.print(table)

    hist = Table(title="Labels per sample")
    hist.add_column("labels", justify="right")
    keys = sorted({int(k) for s in all_stats for k in s.labels_per_sample})
    for s in all_stats:
        hist.add_column(s.name, justify="right")
    for k in keys:
        hist.add_row(str(k), *[f"{s.labels_per_sample.get(str(k), 0):,}" for s in all_stats])
    console.print(hist)

    for s in all_stats:
        if not s.pairs or top_pairs == 0:
            continue
        pairs = Table(title=f"Most frequent label pairs: {s.name}")
        pairs.add_column("pair")
        pairs.add_column("samples", justify="right")
        for (a, b), n in s.pairs.most_common(top_pairs):
            pairs.add_row(f"{a} {CLASS_NAMES[a]} + {b} {CLASS_NAMES[b]}", f"{n:,}")
        console.print(pairs)
    if plot is not None:
        console.print(f"Plot written to {plot}")


def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.", show_default=False)],
    sample_id: Annotated[str, typer.Argument(metavar="ID", help="Sample id.", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", help="PNG file to write.", show_default=False)],
    home: HomeOpt = None,
) -> None:
    """Draw a sample's four stains side by side and the colour composite, titled with its labels.

    Example: hpatool show kaggle-train 00070df0-bbc3-11e8-b2bc-ac1f6b6435d0 --out sample.png
    """
    from hpatool.cli._console import out
    from hpatool.show import show_sample

    with open_registry(home) as reg:
        show_sample(reg, name, sample_id, out_path)
    out().print(f"Wrote {out_path}")
