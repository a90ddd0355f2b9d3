"""The options of ``hpatool train``, stated once: ``train`` takes them all and ``cv`` takes all
but the ones that name one run (``--name``, ``--fold``, ``--resume``, ``--experiment``). Each
help text shows the default from ``TrainConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.engine.config import TrainConfig, default_text


def _default(name: str) -> str:
    """``(default: X)`` for option ``name``, from ``TrainConfig``."""
    return f"(default: {default_text(TrainConfig, name)})"


DatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        "-d",
        metavar="NAME",
        help="Registered dataset; repeat for more. Validation is "
        "a fold of the first (run 'hpatool split' on it); the others only add "
        "training samples. Required unless --resume.",
        show_default=False,
    ),
]

ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        metavar="ARCH",
        help=f"resnet50, inceptionresnetv2, or any timm model name {_default('arch')}.",
        show_default=False,
    ),
]

FoldOpt = Annotated[
    int | None,
    typer.Option(
        "--fold",
        help=f"Validation fold of the first dataset {_default('fold')}.",
        min=0,
        show_default=False,
    ),
]

EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        help=f"Epochs; the cosine schedule spans them all {_default('epochs')}.",
        min=1,
        show_default=False,
    ),
]

BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help=f"Samples per step per process {_default('batch_size')}.",
        min=1,
        show_default=False,
    ),
]

CropOpt = Annotated[
    int | None,
    typer.Option(
        "--crop",
        help="Random square crop side in pixels; validation uses the centre crop (see "
        f"--val-view) and scoring the grid of windows of this size {_default('crop')}.",
        min=8,
        show_default=False,
    ),
]

LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        help=f"Peak AdamW learning rate after warm-up {_default('lr')}.",
        show_default=False,
    ),
]

WeightDecayOpt = Annotated[
    float | None,
    typer.Option(
        "--weight-decay",
        help=f"AdamW weight decay {_default('weight_decay')}.",
        show_default=False,
    ),
]

LossOpt = Annotated[
    str | None,
    typer.Option(
        "--loss",
        metavar="LOSS",
        help="bce, focal (sigmoid focal, gamma 2), lovasz (the Lovász hinge of each class over "
        "the batch, a surrogate of its F1/Jaccard), or a weighted sum: focal+lovasz, "
        f"bce*0.5+lovasz*1; validation loss is BCE whatever this is {_default('loss')}.",
        show_default=False,
    ),
]

OversampleOpt = Annotated[
    str | None,
    typer.Option(
        "--oversample",
        metavar="auto|none|SPEC",
        help="auto (rare classes 2-7x), none, or SPEC: "
        f"CLASS=FACTOR,... e.g. 27=7,Lysosomes=5 {_default('oversample')}.",
        show_default=False,
    ),
]

PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        metavar="imagenet|FILE|none",
        help="imagenet (timm's ImageNet weights for --arch, downloaded once into the Hugging "
        "Face / torch cache), a local state dict to start from (ImageNet timm/torchvision, "
        "3 or 4 channels), a run's checkpoint-best.pt (its 28-class head is kept), or none; "
        "the first convolution is adapted to R, G, B, Y "
        f"{_default('pretrained')}.",
        show_default=False,
    ),
]

WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help=f"DataLoader worker processes {_default('workers')}.",
        min=0,
        show_default=False,
    ),
]

DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda",
        help=f"auto, cpu or cuda {_default('device')}.",
        show_default=False,
    ),
]

AmpOpt = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help=f"Mixed precision on CUDA {_default('amp')}.",
        show_default=False,
    ),
]

OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="DIR",
        help=f"Parent folder of run folders {_default('out')}.",
        show_default=False,
    ),
]

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        metavar="NAME",
        help="Run name and folder (default: ARCH-fFOLD-TIMESTAMP).",
        show_default=False,
    ),
]

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue run --name from its checkpoint-last.pt.")
]

SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help=f"Seed of init, sampling and augmentation {_default('seed')}.",
        min=0,
        show_default=False,
    ),
]

MaxStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-steps",
        help="Stop after this many optimizer steps in total (smoke tests).",
        min=1,
        show_default=False,
    ),
]

LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        help="Use only the first N samples of each dataset (quick runs).",
        min=1,
        show_default=False,
    ),
]

CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--checkpoint-every",
        help="Also save checkpoint-last.pt every N optimizer steps within an epoch (none: "
        "only at epoch ends), so a killed run loses at most N steps on --resume "
        f"{_default('checkpoint_every')}.",
        min=1,
        show_default=False,
    ),
]

StrictOpt = Annotated[
    bool | None,
    typer.Option(
        "--strict/--no-strict",
        help="Refuse to start when samples of the validation fold have no images (default: "
        "leave them out, as all samples without images are, and say how many).",
        show_default=False,
    ),
]

TensorboardOpt = Annotated[
    bool | None,
    typer.Option(
        "--tensorboard/--no-tensorboard",
        help="Also write the per-epoch and every-10-step scalars for TensorBoard to "
        "OUT/NAME/tensorboard (needs the tensorboard package: pip install "
        "'hpatool[tensorboard]').",
        show_default=False,
    ),
]

ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        metavar="EXP",
        help="Add this run to experiment EXP as the model of its --fold (see 'hpatool cv'): "
        "folds can be trained on different machines or GPUs at once, and their run "
        "folders collected with 'hpatool runs import'.",
        show_default=False,
    ),
]

EvalCropsOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-crops",
        help="At the end of the run the best checkpoint scores its validation fold "
        "(oof.csv) as 'predict' would, with this many views (random crops with --tta crops, "
        "flips/rotations of each window with --tta grid+flips; not used by --tta grid); "
        f"thresholds.json is tuned on that view; 1 = the centre crop {_default('eval_crops')}.",
        min=1,
        show_default=False,
    ),
]

EvalAggOpt = Annotated[
    str | None,
    typer.Option(
        "--eval-agg",
        metavar="max|mean",
        help=f"max or mean over the --eval-crops views {_default('eval_agg')}.",
        show_default=False,
    ),
]

TtaOpt = Annotated[
    str | None,
    typer.Option(
        "--tta",
        metavar="MODE",
        help="The test-time augmentation of that view: grid (windows of --crop that together "
        "cover every pixel of the image), grid+flips (each grid window under --eval-crops "
        "flips/rotations; flips is the same), crops (--eval-crops random crops) or crops+flips "
        f"{_default('tta')}.",
        show_default=False,
    ),
]

CacheOpt = Annotated[
    str | None,
    typer.Option(
        "--cache",
        metavar="auto|off",
        help="auto: read each dataset from its decoded cache ('hpatool datasets cache') when "
        "it is complete and matches the images (one that does not is refused, saying how to "
        f"rebuild it); off: read the images {_default('cache')}.",
        show_default=False,
    ),
]

HeadBiasOpt = Annotated[
    str | None,
    typer.Option(
        "--head-bias",
        metavar="prior|zero",
        help="The classifier's starting bias: prior (the log-odds of each class's training "
        "frequency as the sampler draws it, so step one predicts base rates, not 0.5 for all "
        "28 classes) or zero (timm's init); a --pretrained file's trained head is kept either "
        f"way {_default('head_bias')}.",
        show_default=False,
    ),
]

AugmentOpt = Annotated[
    str | None,
    typer.Option(
        "--augment",
        metavar="dihedral|light|strong",
        help="Training augmentation: dihedral (a random crop and one of the 8 flips/rotations), "
        "light (also each channel's brightness, contrast and gamma jittered) or strong (also "
        "rotated up to 15 degrees and scaled up to 15%); deterministic per --seed "
        f"{_default('augment')}.",
        show_default=False,
    ),
]

EmaOpt = Annotated[
    float | None,
    typer.Option(
        "--ema",
        metavar="DECAY",
        help="Keep an exponential moving average of the weights (BatchNorm statistics "
        "included) with this decay; the average is validated and checkpointed in place of the "
        f"raw weights; 0 turns it off {_default('ema')}.",
        show_default=False,
    ),
]

KeepCheckpointsOpt = Annotated[
    int | None,
    typer.Option(
        "--keep-checkpoints",
        metavar="K",
        help="Also keep the weights of the last K epochs (checkpoint-epoch-NNN.pt), for "
        "'hpatool runs average RUN --last K' (default: none kept).",
        min=1,
        show_default=False,
    ),
]

ValViewOpt = Annotated[
    str | None,
    typer.Option(
        "--val-view",
        metavar="centre|eval",
        help="How validation scores each epoch (its F1 picks the best epoch): centre (one "
        "centre crop, the cheapest) or eval (the run's evaluation view: --tta, --eval-crops, "
        f"--eval-agg) {_default('val_view')}.",
        show_default=False,
    ),
]

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Read options from this TOML file (its [train] table, else its top level; "
        "named as the flags are) or from a run's config.json; options given on the "
        "command line win.",
        show_default=False,
    ),
]
