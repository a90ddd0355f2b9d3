"""``hpatool train``: train (or resume) a run; the library's ``engine.training.fit.fit`` does the
work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hpatool.cli._common import ROOT_HOME, HomeOpt, JsonOpt
from hpatool.cli._train_options import (
    AmpOpt,
    ArchOpt,
    AugmentOpt,
    BatchSizeOpt,
    CacheOpt,
    CheckpointEveryOpt,
    ConfigOpt,
    CropOpt,
    DatasetOpt,
    DeviceOpt,
    EmaOpt,
    EpochsOpt,
    EvalAggOpt,
    EvalCropsOpt,
    ExperimentOpt,
    FoldOpt,
    HeadBiasOpt,
    KeepCheckpointsOpt,
    LimitOpt,
    LossOpt,
    LrOpt,
    MaxStepsOpt,
    NameOpt,
    OutOpt,
    OversampleOpt,
    PretrainedOpt,
    ResumeOpt,
    SeedOpt,
    StrictOpt,
    TensorboardOpt,
    TtaOpt,
    ValViewOpt,
    WeightDecayOpt,
    WorkersOpt,
)

if TYPE_CHECKING:
    from hpatool.engine.training.events import ProgressCallback, TrainEvent
    from hpatool.engine.training.fit import FitResult


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
    val_view: ValViewOpt = None,
    head_bias: HeadBiasOpt = None,
    augment: AugmentOpt = None,
    ema: EmaOpt = None,
    keep_checkpoints: KeepCheckpointsOpt = None,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Train a 4-channel (R, G, B, Y) CNN with 28 outputs on registered datasets.

    Validation is fold --fold of the first --dataset. Each epoch writes metrics.csv,
    checkpoint-last.pt, checkpoint-best.pt (on a new best held-out macro F1: thresholds tuned on
    one half of the fold, scored on the other, both ways, over 5 seeded splittings),
    thresholds.json and curves.png to OUT/NAME; config.json holds the resolved configuration. At
    the end the best checkpoint scores the validation fold as 'predict' would (--eval-crops,
    --eval-agg, --tta) into oof.csv, and thresholds.json is tuned on that view. --resume --name
    RUN continues exactly where the run stopped (other options default to the run's).
    --experiment EXP adds the run to a cross-validation experiment ('hpatool cv' trains all
    folds). Under 'torchrun --nproc-per-node N -m hpatool train ...' it trains with DDP.

    Example: hpatool train --dataset kaggle-train --arch resnet50 --fold 0 --epochs 20
    """
    options = dict(locals())  # the parameters as given (None = not given), before anything else
    from hpatool.engine.distributed import env_rank
    from hpatool.engine.training.fit import fit

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
                    + (
                        f"; read from the decoded cache of {', '.join(info['cache'])}"
                        if info.get("cache")
                        else ""
                    )
                    + (
                        f"; validating the weights' moving average (--ema {info['ema']:g})"
                        if info.get("ema")
                        else ""
                    )
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
        f"val loss {m['val_loss']:.4f}, macro F1 {m['macro_f1']:.4f} held out"
        + (
            f" / {m['macro_f1_in_sample']:.4f} in sample"
            if m.get("macro_f1_in_sample") is not None
            else ""
        )
        + f" / {m['macro_f1_at_0.5']:.4f} at 0.5, {m['images_per_s']:.1f} img/s"
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
                "oof_macro_f1_heldout": result.oof_macro_f1_heldout,
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
        held = result.oof_macro_f1_heldout
        oof = (
            f"; out-of-fold macro F1{how}: {held:.4f} held out (thresholds tuned on one half, "
            f"scored on the other), {result.oof_macro_f1:.4f} in sample"
            if held is not None and held == held
            else f"; out-of-fold macro F1 {result.oof_macro_f1:.4f}{how} (in sample)"
        )
    if result.epochs_done == 0 and result.steps > 0:
        best = (
            f"best held-out macro F1 {result.best_f1:.4f} on the partial epoch {result.best_epoch}"
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
        f"{result.steps:,} step{'' if result.steps == 1 else 's'}, best held-out macro F1 {best}"
        f"{oof}. Files in {result.run_dir}"
    )
