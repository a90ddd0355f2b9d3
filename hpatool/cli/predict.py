"""``hpatool predict`` and ``hpatool evaluate``: from a trained run to a submission and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        "--run-name",
        help="A registered training run (uses its best checkpoint). Under torchrun write "
        "--run-name: torchrun's own parser takes --run for its --run-path.",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="A checkpoint file instead of --run.", show_default=False),
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="The registered dataset to score.", show_default=False)
]
AggOpt = Annotated[
    str, typer.Option("--agg", help="How to combine the crops' probabilities: max or mean.")
]
CropSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--crop-size",
        help="Crop size (default: the run's training crop; the image size means the whole image).",
        show_default=False,
    ),
]
ThresholdOpt = Annotated[
    str,
    typer.Option(
        "--threshold", help="'auto' (the run's per-class thresholds) or a number for every class."
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.", min=1)]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes.", min=0)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random crops.")]
MinLabelsOpt = Annotated[
    int,
    typer.Option(
        "--min-labels",
        help="Each image gets at least this many labels (the most probable).",
        min=0,
        max=28,
    ),
]


def predict(
    dataset: DatasetOpt,
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    crops: Annotated[int, typer.Option("--crops", help="Random crops per image.", min=1)] = 8,
    crop_size: CropSizeOpt = None,
    agg: AggOpt = "max",
    threshold: ThresholdOpt = "auto",
    min_labels: MinLabelsOpt = 1,
    out: Annotated[Path, typer.Option("--out", help="Submission CSV (Id,Predicted).")] = Path(
        "submission.csv"
    ),
    probs: Annotated[
        Path | None,
        typer.Option(
            "--probs", help="Also write Id plus 28 probability columns 0..27.", show_default=False
        ),
    ] = None,
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first missing or corrupt image.")
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Score every image of a dataset on random crops and write a Kaggle submission.

    Each image is scored on --crops random crops (seeded: the same command gives the same file)
    in batched forward passes; the probabilities are combined by max or mean. Rows follow the
    dataset's order (a dataset registered from sample_submission.csv keeps that file's order).
    A missing or corrupt image is reported and the others go to <out>.partial.csv (exit 1).
    Works under torchrun: each rank scores a share, rank 0 writes.

    Example: hpatool predict --run resnet50-f0 --dataset kaggle-test --crops 8 --agg max
    """
    from hpatool.cli._console import out as console_out
    from hpatool.cli._console import progress_bar
    from hpatool.engine.predict import predict as run_predict

    with open_registry(home) as reg, progress_bar(f"predict {dataset}", "images") as progress:
        result = run_predict(
            reg,
            dataset=dataset,
            run=run,
            checkpoint=checkpoint,
            crops=crops,
            crop_size=crop_size,
            agg=agg,
            threshold=threshold,
            min_labels=min_labels,
            out=out,
            probs_out=probs,
            batch_size=batch_size,
            workers=workers,
            device=device,
            seed=seed,
            strict=strict,
            progress=progress,
        )
    if not result.is_main:
        return
    console = console_out()
    console.print(
        f"Scored {result.scored:,} images of {dataset} ({result.agg} of {crops} crops of "
        f"{result.crop}px) with {result.checkpoint}"
    )
    console.print(
        f"Submission: {result.submission}"
        + (f"; probabilities: {result.probs}" if result.probs else "")
    )


def evaluate(
    dataset: DatasetOpt,
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    fold: Annotated[
        int | None,
        typer.Option(
            "--fold",
            help="Only this fold (default: the run's validation fold when "
            "the dataset is the run's first, else every labelled sample).",
            show_default=False,
        ),
    ] = None,
    crops: Annotated[int, typer.Option("--crops", help="Random crops per image.", min=1)] = 8,
    crop_size: CropSizeOpt = None,
    agg: AggOpt = "max",
    threshold: ThresholdOpt = "auto",
    min_labels: MinLabelsOpt = 1,
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write per-class F1 as a bar chart to this PNG.", show_default=False
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Per-class precision, recall, F1 and support, and macro F1, for one aggregation.

    Predictions are made exactly as 'hpatool predict' makes them (crops, aggregation,
    thresholds, --min-labels), so comparing --agg max with --agg mean is one command each.

    Example: hpatool evaluate --run resnet50-f0 --dataset kaggle-train --agg mean --plot f1.png
    """
    from hpatool._io import figure_file
    from hpatool.cli._console import Table, print_json, progress_bar
    from hpatool.cli._console import out as console_out
    from hpatool.engine.predict import evaluate_run, plot_f1

    if plot is not None:
        plot = figure_file(plot, "--plot")
    with open_registry(home) as reg, progress_bar(f"evaluate {dataset}", "images") as progress:
        result = evaluate_run(
            reg,
            dataset=dataset,
            run=run,
            checkpoint=checkpoint,
            fold=fold,
            crops=crops,
            crop_size=crop_size,
            agg=agg,
            threshold=threshold,
            min_labels=min_labels,
            batch_size=batch_size,
            workers=workers,
            device=device,
            seed=seed,
            progress=progress,
        )
    if not result.is_main:
        return
    if plot is not None:
        plot_f1([result], plot)
    if json_:
        print_json(result.to_json())
        return
    where = f"{dataset}" + (f" fold {result.fold}" if result.fold is not None else "")
    table = Table(
        title=f"{where}: {result.samples:,} images, {result.agg} of {result.crops} "
        f"crops of {result.crop}px, thresholds {result.threshold}"
    )
    for col in ("#", "class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in result.classes:
        table.add_row(
            str(c.index),
            c.name,
            f"{c.precision:.3f}",
            f"{c.recall:.3f}",
            f"{c.f1:.3f}",
            f"{c.support:,}",
            style="dim" if c.support == 0 else None,
        )
    console = console_out()
    console.print(table)
    console.print(
        f"macro F1 {result.macro_f1:.4f} (at a 0.5 threshold: {result.macro_f1_at_05:.4f})"
    )
    if plot is not None:
        console.print(f"Plot written to {plot}")
