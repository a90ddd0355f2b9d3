"""``hpatool evaluate``: per-class precision, recall and F1 of a trained run on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.cli._scoring_options import (
    AggOpt,
    BatchOpt,
    CacheOpt,
    CheckpointOpt,
    CropSizeOpt,
    CropsOpt,
    DatasetOpt,
    DeviceOpt,
    EvaluateConfigOpt,
    ExperimentOpt,
    MinLabelsOpt,
    RunOpt,
    SeedOpt,
    ThresholdOpt,
    TtaOpt,
    WeightOpt,
    WorkersOpt,
)
from hpatool.cli.experiments import SortOpt

if TYPE_CHECKING:
    from hpatool.engine.scoring.evaluate import EvaluationReport

FoldOpt = Annotated[
    int | None,
    typer.Option(
        "--fold",
        help="Only this fold (default: the run's validation fold when "
        "the dataset is the run's first, else every labelled sample).",
        show_default=False,
    ),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png",
        help="Write one figure to this PNG (or SVG, PDF): per-class F1, precision and recall "
        "for max and mean of the same crops, with each class's support.",
        show_default=False,
    ),
]


def evaluate(
    dataset: DatasetOpt = None,
    run: RunOpt = None,
    experiment: ExperimentOpt = None,
    weight: WeightOpt = None,
    sort: SortOpt = "class",
    checkpoint: CheckpointOpt = None,
    fold: FoldOpt = None,
    crops: CropsOpt = None,
    crop_size: CropSizeOpt = None,
    agg: AggOpt = None,
    tta: TtaOpt = None,
    cache: CacheOpt = None,
    threshold: ThresholdOpt = None,
    min_labels: MinLabelsOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    config: EvaluateConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Per-class precision, recall, F1 and support, and macro F1, for one aggregation.

    Predictions are made exactly as 'hpatool predict' makes them (views, aggregation,
    thresholds, --min-labels; one run, or an ensemble of --run A --run B ... or --experiment
    EXP). Both aggregations of the same views are also scored held out, each with thresholds
    tuned for it on one half of its own predictions and scored on the other (both ways, 5
    seeded splittings): the figures to compare max and mean by. When the applied thresholds
    were tuned on the scored samples (a run on its own validation fold), the figure with them
    is in sample, and the output says so and leads with the held-out one. On the
    run's own validation dataset and fold, the run's --limit applies (an ensemble has no
    default fold: give --fold, or every labelled sample is scored).
    Everything is checked before scoring: samples whose images are missing or unreadable are
    left out (one warning line says how many and why), and a warning says how many of the
    evaluated samples the run trained on.

    Example: hpatool evaluate --run resnet50-f0 --dataset kaggle-train --agg mean --plot f1.png
    """
    options = dict(locals())  # the parameters as given (None = not given), before anything else
    from hpatool.cli._console import print_json, progress_bar
    from hpatool.cli.experiments import sort_classes
    from hpatool.engine.config import predict_config
    from hpatool.engine.scoring.evaluate import evaluate_run

    sort_classes([], sort)  # a bad --sort before any work
    settings = predict_config(options, config, "evaluate")
    with (
        open_registry(home) as reg,
        progress_bar(f"evaluate {settings.dataset}", "images") as progress,
    ):
        report = evaluate_run(
            reg, settings, progress=progress, inputs=[(config, "the --config file")]
        )
    if not report.is_main:
        return
    if json_:
        print_json(report.to_json())
        return
    _print_report(report, sort)


def _print_report(report: EvaluationReport, sort: str) -> None:
    """The per-class table (rows in ``--sort`` order), the macro F1 line, where the plot is."""
    from hpatool.cli._console import Table
    from hpatool.cli._console import out as console_out
    from hpatool.cli.experiments import sort_classes

    where = report.dataset + (f" fold {report.fold}" if report.fold is not None else "")
    if report.limit is not None:
        where += f" (the run's --limit {report.limit:,})"
    left = sum(report.left_out.values())
    images = f"{report.samples:,} images" + (f" ({left:,} left out)" if left else "")
    if report.cached:
        images += " read from the decoded cache"
    model = f", {report.model_text}" if len(report.models) > 1 else ""
    table = Table(
        title=f"{where}: {images}, {report.scoring_text}{model}, thresholds {report.threshold}"
    )
    for col in ("#", "class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in sort_classes(list(report.classes), sort):
        empty = c.support == 0  # no positives: recall and F1 undefined, shown as "-"
        table.add_row(
            str(c.index),
            c.name,
            f"{c.precision:.3f}",
            "-" if empty else f"{c.recall:.3f}",
            "-" if empty else f"{c.f1:.3f}",
            f"{c.support:,}",
            style="dim" if empty else None,
        )
    console = console_out()
    console.print(table)
    console.print(_figures_line(report), markup=False, soft_wrap=True)
    if report.plot is not None:
        console.print(f"Plot written to {report.plot}")


def _figures_line(report: EvaluationReport) -> str:
    """The macro F1s: with the thresholds applied (said to be in sample when they were tuned
    on scored samples), held out per aggregation (thresholds tuned for each), at 0.5."""
    by_agg = report.macro_f1_by_agg
    held = ", ".join(
        f"{agg} {f1:.4f}{' (reported)' if agg == report.agg and len(by_agg) > 1 else ''}"
        for agg, f1 in by_agg.items()
    )
    held_text = (
        f"held out (thresholds tuned on one half of each aggregation's own predictions, scored "
        f"on the other): {held}"
        if held
        else ""
    )
    applied = f"macro F1 {report.macro_f1:.4f} with the thresholds applied"
    if report.in_sample:
        applied += (
            f" (in sample: they were tuned on {report.tuned_on_scored:,} of the "
            f"{report.samples:,} samples scored here; compare by the held-out figure)"
        )
    parts = [held_text, applied] if report.in_sample else [applied, held_text]
    parts.append(f"at a 0.5 threshold: {report.macro_f1_at_05:.4f}")
    return "; ".join(p for p in parts if p)
