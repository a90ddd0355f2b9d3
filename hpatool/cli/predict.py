"""``hpatool predict``: from a trained run to a Kaggle submission."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from hpatool.engine.scoring.prior import PriorMatch

from hpatool.cli._common import HomeOpt, open_registry
from hpatool.cli._scoring_options import (
    AggOpt,
    BatchOpt,
    CacheOpt,
    CheckpointOpt,
    CropSizeOpt,
    CropsOpt,
    DatasetOpt,
    DeviceOpt,
    ExperimentOpt,
    MinLabelsOpt,
    PredictConfigOpt,
    RunOpt,
    SeedOpt,
    ThresholdOpt,
    TtaOpt,
    WeightOpt,
    WorkersOpt,
    help_with_default,
)

OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="FILE.csv",
        help=help_with_default("Submission CSV (Id,Predicted).", "out"),
        show_default=False,
    ),
]
ProbsOpt = Annotated[
    Path | None,
    typer.Option(
        "--probs",
        metavar="FILE.csv",
        help="Also write Id plus 28 probability columns 0..27.",
        show_default=False,
    ),
]
StrictOpt = Annotated[
    bool | None,
    typer.Option(
        "--strict",
        help="Refuse, before scoring, a dataset with missing or unreadable images; stop at "
        "the first image that fails while scored.",
        show_default=False,
    ),
]


KnownLabelsOpt = Annotated[
    bool | None,
    typer.Option(
        "--known-labels",
        help="A sample whose duplicate cluster ('hpatool dedup') holds labelled samples gets "
        "the union of their labels instead of the model's prediction (off by default).",
        show_default=False,
    ),
]


def predict(
    dataset: DatasetOpt = None,
    run: RunOpt = None,
    experiment: ExperimentOpt = None,
    weight: WeightOpt = None,
    checkpoint: CheckpointOpt = None,
    crops: CropsOpt = None,
    crop_size: CropSizeOpt = None,
    agg: AggOpt = None,
    tta: TtaOpt = None,
    cache: CacheOpt = None,
    threshold: ThresholdOpt = None,
    min_labels: MinLabelsOpt = None,
    out: OutOpt = None,
    probs: ProbsOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    strict: StrictOpt = None,
    known_labels: KnownLabelsOpt = None,
    config: PredictConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Score every image of a dataset with one model or an ensemble; write a Kaggle submission.

    Each image is scored on its views (--tta grid: the windows that together cover every pixel;
    grid+flips: each of them flipped and rotated; crops: --crops random crops, seeded, so the
    same command gives the same file; --crops 1 is the centre crop) in batched forward passes,
    in the dtype the run trained in; the views' probabilities are combined by max or mean. By
    default each model uses the view its thresholds were tuned on (stored with the run); another
    view gets one warning line. An ensemble (--run A --run B ..., or --experiment EXP) scores
    its models one after another with the same seed and averages their probabilities. At the
    end, a warning names classes predicted far more (or less) often than in the training data.
    Rows follow the dataset's order (a dataset registered from sample_submission.csv keeps that
    file's order). Images that are not there are found before scoring and named in one warning;
    their rows get no labels (--strict refuses instead). An image that cannot be read (its
    header, checked before scoring, or its body) is reported and the others go to
    <out>.partial.csv (exit 1). Works under torchrun: each rank scores a share, rank 0 writes.

    Example: hpatool predict --experiment resnet50-cv --dataset kaggle-test --probs probs.csv
    """
    options = dict(locals())  # the parameters as given (None = not given), before anything else
    from hpatool.cli._console import out as console_out
    from hpatool.cli._console import progress_bar
    from hpatool.engine.config import predict_config
    from hpatool.engine.scoring.predict import predict as run_predict

    settings = predict_config(options, config, "predict")
    with (
        open_registry(home) as reg,
        progress_bar(f"predict {settings.dataset}", "images") as progress,
    ):
        result = run_predict(
            reg, settings, progress=progress, inputs=[(config, "the --config file")]
        )
    if not result.is_main:
        return
    console = console_out()
    left = (
        f"; {result.n_left_out:,} left out, with no labels in the submission"
        if result.n_left_out
        else ""
    )
    cached = " (read from its decoded cache)" if result.cached else ""
    console.print(
        f"Scored {result.scored:,} of {result.samples:,} images of {result.dataset}{cached} "
        f"({result.scoring_text}) with {result.model_text}{left}"
    )
    if result.known_labels is not None:
        console.print(
            f"--known-labels: {result.known_labels:,} samples took the labels of their labelled "
            "duplicates (hpatool dedup) instead of the model's"
        )
    if result.prior is not None:
        _print_prior(result.prior)
    console.print(
        f"Submission: {result.submission}"
        + (f"; probabilities: {result.probs}" if result.probs else "")
    )


def _print_prior(match: PriorMatch) -> None:
    """``--threshold prior``'s table: each class's target and predicted share and threshold."""
    from hpatool.cli._console import Table
    from hpatool.cli._console import out as console_out
    from hpatool.labels import CLASS_NAMES

    table = Table(
        title=f"Thresholds matched to the class shares of {match.source} (no --min-labels top-up)"
    )
    for col in ("#", "class", "target", "predicted", "threshold"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, name in enumerate(CLASS_NAMES):
        target = float(match.target[c])
        table.add_row(
            str(c),
            name,
            "tuned" if target != target else f"{100 * target:.2f}%",
            f"{100 * float(match.predicted[c]):.2f}%",
            f"{float(match.thresholds[c]):.4f}",
            style="dim" if target != target else None,
        )
    console_out().print(table)
