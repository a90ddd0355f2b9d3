"""The options of ``hpatool predict`` and ``hpatool evaluate``, stated once for both.

Every option defaults to ``None`` (= not given), so a value from ``--config FILE`` can be told
apart from one typed on the command line; the real defaults live in ``PredictConfig`` and the
help texts show them from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hpatool.engine.config import PredictConfig, default_text


def help_with_default(text: str, name: str) -> str:
    """``text`` with ``name``'s default from ``PredictConfig``: "Seed (default: 0).", or
    "Labels (the most probable; default: 1)." for a text that ends in a parenthesis."""
    default = default_text(PredictConfig, name)
    if text.endswith(")."):
        return f"{text[:-2]}; default: {default})."
    return f"{text.rstrip('.')} (default: {default})."


DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        metavar="NAME",
        help="The registered dataset to score (required, here or in --config).",
        show_default=False,
    ),
]
RunOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--run",
        "--run-name",
        metavar="RUN",
        help="A registered training run (uses its best checkpoint); repeat it, or add "
        "--experiment, for an ensemble (the models' probabilities averaged); RUN:WEIGHT weighs "
        "it (default 1). Under torchrun write --run-name: torchrun's own parser takes --run "
        "for its --run-path.",
        show_default=False,
    ),
]
ExperimentOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--experiment",
        metavar="EXP",
        help="Every run of this experiment ('hpatool cv'), as an ensemble: each scores with "
        "its own view, the probabilities are averaged, and --threshold auto uses thresholds "
        "tuned on the runs' out-of-fold predictions together (weighted alike). Repeat it, or "
        "add --run, to ensemble several; EXP:WEIGHT weighs the experiment (split among its "
        "runs).",
        show_default=False,
    ),
]
WeightOpt = Annotated[
    list[float] | None,
    typer.Option(
        "--weight",
        metavar="W",
        help="The ensemble's weights, one per --run (or one per --experiment) in order; "
        "normalised to sum to 1 (default: equal; or write RUN:WEIGHT).",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        metavar="FILE.pt",
        help="A checkpoint file instead of --run (one model).",
        show_default=False,
    ),
]
CropsOpt = Annotated[
    int | None,
    typer.Option(
        "--crops",
        help="Views per image: random crops (1 = the centre crop) with --tta crops, or "
        "flips/rotations of each window with --tta grid+flips; not used by --tta grid "
        "(default: the run's stored view, its --eval-crops; 8 for a run that stores none).",
        min=1,
        show_default=False,
    ),
]
CropSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--crop-size",
        help="Crop size (default: the run's training crop; the image size means the whole image).",
        show_default=False,
    ),
]
AggOpt = Annotated[
    str | None,
    typer.Option(
        "--agg",
        metavar="max|mean",
        help="How to combine the views' probabilities: max or mean (default: the run's stored "
        "view, its --eval-agg; max for a run that stores none).",
        show_default=False,
    ),
]
TtaOpt = Annotated[
    str | None,
    typer.Option(
        "--tta",
        metavar="MODE",
        help="Test-time augmentation: grid (windows of the crop that together cover every "
        "pixel of the image), grid+flips (each grid window under --crops of the 8 "
        "flips/rotations; flips is the same), crops (--crops random crops), crops+flips "
        "(random crop i under flip/rotation i mod 8); when the crop is the whole image, grid "
        "is that one window and the flip modes its flips (default: the run's stored view, its "
        "--tta; crops for a run that stores none).",
        show_default=False,
    ),
]
ThresholdOpt = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        metavar="auto|NUM|prior|FILE.csv",
        help=help_with_default(
            "'auto' (the run's per-class thresholds, tuned on its stored view; an ensemble's: "
            "tuned on its runs' out-of-fold predictions), a number for every class, or (predict "
            "only) 'prior': each class's threshold set so that its share of the scored images "
            "equals its share in the training data ('prior=FILE.csv': the shares of a CSV with "
            "columns class, share; classes it does not name keep their tuned thresholds; the "
            "--min-labels top-up is off).",
            "threshold",
        ),
        show_default=False,
    ),
]
MinLabelsOpt = Annotated[
    int | None,
    typer.Option(
        "--min-labels",
        help=help_with_default(
            "Each image gets at least this many labels (the most probable).", "min_labels"
        ),
        min=0,
        max=28,
        show_default=False,
    ),
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help=help_with_default("Images per forward pass.", "batch_size"),
        min=1,
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help=help_with_default("DataLoader worker processes.", "workers"),
        min=0,
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda",
        help=help_with_default("auto, cpu or cuda.", "device"),
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help=help_with_default("Seed of the random crops (the same for every model).", "seed"),
        min=0,
        show_default=False,
    ),
]


def _config_option(tables: str) -> Any:
    return typer.Option(
        "--config",
        metavar="FILE.toml",
        help=f"Read options from this TOML file (its {tables} table, else its top level; "
        "named as the flags are); options given on the command line win.",
        show_default=False,
    )


PredictConfigOpt = Annotated[Path | None, _config_option("[predict]")]
EvaluateConfigOpt = Annotated[Path | None, _config_option("[evaluate] or [predict]")]

CacheOpt = Annotated[
    str | None,
    typer.Option(
        "--cache",
        metavar="auto|off",
        help=help_with_default(
            "auto: read the dataset from its decoded cache ('hpatool datasets cache') when it "
            "is complete and matches the images (one that does not is refused, saying how to "
            "rebuild it); off: read the images.",
            "cache",
        ),
        show_default=False,
    ),
]
