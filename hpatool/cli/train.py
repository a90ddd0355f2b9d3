"""``hpatool train``: train (or resume) a run; the library's ``engine.train.fit`` does the work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import ROOT_HOME, HomeOpt, JsonOpt
from hpatool.engine.config import TrainConfig, default_text

if TYPE_CHECKING:
    from hpatool.engine.events import ProgressCallback, TrainEvent
    from hpatool.engine.train import FitResult


def _default(name: str) -> str:
    """``(default: X)`` for option ``name``, from ``TrainConfig``."""
    return f"(default: {default_text(TrainConfig, name)})"


DatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        "-d",
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
        help="Random square crop side in pixels; validation "
        f"uses the centre crop {_default('crop')}.",
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
        help=f"bce or focal (sigmoid focal, gamma 2) {_default('loss')}.",
        show_default=False,
    ),
]

OversampleOpt = Annotated[
    str | None,
    typer.Option(
        "--oversample",
        help="auto (rare classes 2-7x), none, or "
        f"CLASS=FACTOR,... e.g. 27=7,Lysosomes=5 {_default('oversample')}.",
        show_default=False,
    ),
]

PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
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
    typer.Option("--device", help=f"auto, cpu or cuda {_default('device')}.", show_default=False),
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
        help=f"Parent folder of run folders {_default('out')}.",
        show_default=False,
    ),
]

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
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
        "(oof.csv) as 'predict' would, with this many crops; thresholds.json is tuned on "
        f"that view; 1 = the centre crop {_default('eval_crops')}.",
        min=1,
        show_default=False,
    ),
]

EvalAggOpt = Annotated[
    str | None,
    typer.Option(
        "--eval-agg",
        help=f"max or mean over the --eval-crops views {_default('eval_agg')}.",
        show_default=False,
    ),
]

TtaOpt = Annotated[
    str | None,
    typer.Option(
        "--tta",
        help="The test-time augmentation of that view: crops (random crops), flips (the "
        "centre crop flipped and rotated) or crops+flips "
        f"{_default('tta')}.",
        show_default=False,
    ),
]

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Read options from this TOML file (its [train] table, else its top level; "
        "named as the flags are) or from a run's config.json; options given on the "
        "command line win.",
        show_default=False,
    ),
]


def train(
    dataset: DatasetOpt = None,
    arch: ArchOpt = None,
    fold: FoldOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    crop: CropOpt = None,
    lr: LrOpt = None,
    weight_decay: WeightDecayOpt = None,
    loss: LossOpt = None,
    oversample: OversampleOpt = None,
    pretrained: PretrainedOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    resume: ResumeOpt = False,
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    limit: LimitOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    strict: StrictOpt = None,
    tensorboard: TensorboardOpt = None,
    experiment: ExperimentOpt = None,
    eval_crops: EvalCropsOpt = None,
    eval_agg: EvalAggOpt = None,
    tta: TtaOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Train a 4-channel (R, G, B, Y) CNN with 28 outputs on registered datasets.

    Validation is fold --fold of the first --dataset. Each epoch writes metrics.csv,
    checkpoint-last.pt, checkpoint-best.pt (on a new best tuned macro F1), thresholds.json and
    curves.png to OUT/NAME; config.json holds the resolved configuration. At the end the best
    checkpoint scores the validation fold as 'predict' would (--eval-crops, --eval-agg, --tta)
    into oof.csv, and thresholds.json is tuned on that view. --resume --name RUN continues
    exactly where the run stopped (other options default to the run's). --experiment EXP adds
    the run to a cross-validation experiment ('hpatool cv' trains all folds). Under
    'torchrun --nproc-per-node N -m hpatool train ...' it trains with DDP.

    Example: hpatool train --dataset kaggle-train --arch resnet50 --fold 0 --epochs 20
    """
    options = dict(locals())  # the parameters as given (None = not given), before anything else
    from hpatool.engine.distributed import env_rank
    from hpatool.engine.train import fit

    main_rank = env_rank()[0] == 0
    with _train_progress(enabled=main_rank and not json_) as callback:
        result = fit(
            options,
            config_file=config,
            home=home if home is not None else ROOT_HOME.get(),
            resume=resume,
            progress=callback,
        )
    if main_rank:
        _print_result(result, json_)


@contextlib.contextmanager
def _train_progress(enabled: bool) -> Iterator[ProgressCallback]:
    """A progress bar on stderr (steps, loss, images/s, ETA) + one stdout line per epoch."""
    from hpatool.cli._console import progress_bar

    with progress_bar("train", "steps", enabled=enabled) as bar:

        def callback(event: TrainEvent) -> None:
            if not enabled:
                return
            if event.kind == "start":
                info = event.info
                resumed = " (resumed)" if info.get("resumed") else ""
                bar.print(
                    f"Run [bold]{event.name}[/]{resumed}: {info['train_samples']:,} training, "
                    f"{info['val_samples']:,} validation samples on {info['device']}"
                    + (f" x{info['world_size']}" if info["world_size"] > 1 else "")
                    + f"; files in {event.run_dir}"
                )
                for line in info.get("left_out", []):
                    bar.print(line)
                if info.get("duplicates_removed"):
                    bar.print(
                        f"{info['duplicates_removed']:,} training samples left out: duplicates "
                        "of validation samples (hpatool dedup; listed in config.json)"
                    )
                if info.get("dedup_hint") and not info.get("resumed"):
                    names = " ".join(info["dedup_hint"])
                    bar.print(
                        f"hint: run 'hpatool dedup {names}' before splitting and training: "
                        "duplicates across the train/validation boundary inflate validation F1"
                    )
                if info.get("unsplit"):
                    bar.print(
                        f"{info['unsplit']:,} samples of the first dataset left out: they have "
                        "no fold (their images came after its split; 'hpatool split NAME "
                        "--force' includes them)"
                    )
                bar.update(event.step, event.total_steps, stats="loss -  - img/s")
            elif event.kind == "step":
                loss = f"{event.loss:.4f}" if event.loss is not None else "-"
                ips = f"{event.images_per_s:.1f}" if event.images_per_s else "-"
                bar.update(
                    event.step,
                    description=f"epoch {event.epoch}/{event.epochs}",
                    stats=f"loss {loss}  {ips} img/s",
                )
            elif event.kind == "validate":
                bar.update(
                    description=f"epoch {event.epoch}/{event.epochs} validating",
                    stats=f"{event.val_done:,}/{event.val_total:,} val images",
                )
            elif event.kind == "oof":
                bar.update(
                    description="scoring validation fold",
                    stats=f"{event.val_done:,}/{event.val_total:,} "
                    f"({event.info.get('view', 'the run view')})",
                )
            elif event.kind == "epoch" and event.metrics is not None:
                bar.update(description=f"epoch {event.epoch}/{event.epochs} done")
                bar.print(_epoch_line(event))

        yield callback


def _epoch_line(event: TrainEvent) -> str:
    m = event.metrics or {}
    partial = " (partial, --max-steps)" if m.get("partial") else ""
    return (
        f"epoch {event.epoch}/{event.epochs}{partial}: train loss {m['train_loss']:.4f}, "
        f"val loss {m['val_loss']:.4f}, macro F1 {m['macro_f1']:.4f} tuned / "
        f"{m['macro_f1_at_0.5']:.4f} at 0.5, {m['images_per_s']:.1f} img/s"
        + ("  [green]best[/]" if event.best else "")
    )


def _print_result(result: FitResult, json_: bool) -> None:
    from hpatool.cli._console import out, print_json

    if json_:
        print_json(
            {
                "name": result.name,
                "run_dir": str(result.run_dir),
                "status": result.status,
                "epochs_done": result.epochs_done,
                "steps": result.steps,
                "best_f1": result.best_f1,
                "best_epoch": result.best_epoch,
                "oof_macro_f1": result.oof_macro_f1,
                "oof_view": result.oof_view,
                "history": result.history,
            }
        )
        return
    out().print(_result_line(result))


def _result_line(result: FitResult) -> str:
    """``Run NAME done: N epochs, ...``; a run stopped inside its first epoch says so, and
    that its best F1 is that of the partial epoch."""
    oof = ""
    if result.oof_macro_f1 is not None:
        how = f" on {result.oof_text}" if result.oof_text else ""
        oof = f"; out-of-fold macro F1 {result.oof_macro_f1:.4f}{how} (thresholds tuned on it)"
    if result.epochs_done == 0 and result.steps > 0:
        best = (
            f"best tuned macro F1 {result.best_f1:.4f} on the partial epoch {result.best_epoch}"
            if result.best_f1 is not None
            else "no validation yet"
        )
        return (
            f"Run [bold]{result.name}[/] {result.status} after {result.steps:,} steps in epoch 1 "
            f"(no full epoch yet); {best}{oof}. Files in {result.run_dir}"
        )
    best = "-"
    if result.best_f1 is not None:
        partial = " partial" if (result.best_epoch or 0) > result.epochs_done else ""
        best = f"{result.best_f1:.4f} (epoch {result.best_epoch}{partial})"
    return (
        f"Run [bold]{result.name}[/] {result.status}: {result.epochs_done} "
        f"epoch{'' if result.epochs_done == 1 else 's'}, "
        f"{result.steps:,} step{'' if result.steps == 1 else 's'}, best tuned macro F1 {best}"
        f"{oof}. Files in {result.run_dir}"
    )
