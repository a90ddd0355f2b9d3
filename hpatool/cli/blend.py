"""``hpatool blend``: a submission from saved probability files; ``engine.scoring.blend`` does the
work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

FilesArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="PROBS.csv...",
        help="Probability files written by 'predict --probs' (Id and 28 probabilities), "
        "of the same images.",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="FILE.csv",
        help="The submission to write (Id,Predicted).",
        show_default=False,
    ),
]
WeightOpt = Annotated[
    list[float] | None,
    typer.Option(
        "--weight",
        metavar="W",
        help="One weight per file, in order; normalised to sum to 1 (default: equal).",
        show_default=False,
    ),
]
OofOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--oof",
        metavar="RUN|EXP|FILE.csv",
        help="For --threshold auto: each file's out-of-fold predictions, in order: an "
        "oof.csv, or a registered run or experiment (its oof.csv files).",
        show_default=False,
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        metavar="NAME",
        help="The registered dataset whose labels the --oof predictions are scored against "
        "(default: the one the --oof runs validate on).",
        show_default=False,
    ),
]
ThresholdOpt = Annotated[
    str,
    typer.Option(
        "--threshold",
        metavar="auto|NUM|FILE.csv",
        help="auto (tuned on the --oof predictions blended with the same weights), a "
        "number for every class, a CSV of per-class thresholds (class,threshold), or "
        "prior=FILE.csv (each class's predicted share matched to the file's).",
    ),
]
MinLabelsOpt = Annotated[
    int | None,
    typer.Option(
        "--min-labels",
        help="Give every image at least this many labels, the most probable (default: 1; "
        "0 with prior matching).",
        min=0,
        max=28,
        show_default=False,
    ),
]
ProbsOpt = Annotated[
    Path | None,
    typer.Option(
        "--probs",
        metavar="FILE.csv",
        help="Also write the blended probabilities.",
        show_default=False,
    ),
]


def blend(
    files: FilesArg,
    out: OutOpt,
    weight: WeightOpt = None,
    oof: OofOpt = None,
    dataset: DatasetOpt = None,
    threshold: ThresholdOpt = "auto",
    min_labels: MinLabelsOpt = None,
    probs: ProbsOpt = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Blend saved probability files into a submission, without the models.

    The files must hold the same Ids; their probabilities are averaged with --weight. The
    thresholds are given (a number, a CSV of per-class thresholds, prior=FILE.csv) or tuned on
    the members' out-of-fold predictions blended the same way (--oof, one per file): blending
    the --probs files of 'predict --run A' and 'predict --run B' with --oof A --oof B gives the
    submission of 'predict --run A --run B'.

    Example: hpatool blend r50.csv irv2.csv --weight 2 --weight 1 --oof r50 --oof irv2 --out sub.csv
    """
    from hpatool.cli._console import out as console_out
    from hpatool.cli._console import print_json
    from hpatool.engine.scoring.blend import blend as run_blend

    with open_registry(home) as reg:
        result = run_blend(
            reg,
            files,
            out=out,
            weights=weight or [],
            oof=oof or [],
            dataset=dataset,
            threshold=threshold,
            min_labels=min_labels,
            probs_out=probs,
        )
    if json_:
        print_json(result.to_json())
        return
    weights = ", ".join(
        f"{f.name} x{w:.2f}" for f, w in zip(result.files, result.weights, strict=True)
    )
    labels = sum(result.label_counts.values())
    console_out().print(
        f"Blended {len(result.ids):,} images from {len(result.files)} files ({weights}); "
        f"thresholds {result.threshold_text}; {labels:,} labels. Submission: {result.out}"
        + (f"; probabilities: {result.probs_out}" if result.probs_out else ""),
        markup=False,
        soft_wrap=True,
    )
