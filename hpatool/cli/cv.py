"""``hpatool cv``: K-fold cross-validation, one run per fold of the first dataset's split; the
library's ``engine.training.cv.cross_validate`` does the work."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

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
    DeviceOpt,
    EmaOpt,
    EpochsOpt,
    EvalAggOpt,
    EvalCropsOpt,
    HeadBiasOpt,
    KeepCheckpointsOpt,
    LimitOpt,
    LossOpt,
    LrOpt,
    MaxStepsOpt,
    OutOpt,
    OversampleOpt,
    PretrainedOpt,
    SeedOpt,
    StrictOpt,
    TensorboardOpt,
    TtaOpt,
    ValViewOpt,
    WeightDecayOpt,
    WorkersOpt,
)

if TYPE_CHECKING:
    from hpatool.engine.training.cv import CvResult, FoldPlan, FoldProgress
    from hpatool.engine.training.events import ProgressCallback, TrainEvent

CvDatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        "-d",
        metavar="NAME",
        help="Registered dataset; repeat for more. The folds are those of the first one's "
        "split ('hpatool split'); the others only add training samples. Required for a new "
        "experiment; a rerun takes the experiment's.",
        show_default=False,
    ),
]
ExperimentNameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        metavar="NAME",
        help="The experiment; fold K is trained as run NAME-fK.",
        show_default=False,
    ),
]
FoldsOpt = Annotated[
    int | None,
    typer.Option(
        "--folds",
        metavar="K",
        help="Check that the first dataset is split into K folds (default: train every fold "
        "of its split).",
        min=2,
        show_default=False,
    ),
]
CvFoldOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--fold",
        metavar="K",
        help="Train only this fold; repeat for more (default: every fold).",
        min=0,
        show_default=False,
    ),
]


def cv(
    name: ExperimentNameOpt,
    dataset: CvDatasetOpt = None,
    folds: FoldsOpt = None,
    fold: CvFoldOpt = None,
    arch: ArchOpt = None,
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
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    limit: LimitOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    strict: StrictOpt = None,
    tensorboard: TensorboardOpt = None,
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
    """Cross-validate: train every fold of the first dataset's split, one run per fold.

    Fold K is trained as run NAME-fK of experiment NAME (as 'hpatool train --fold K --experiment
    NAME' would), one after another; each run ends by scoring its validation fold (oof.csv). At
    the end: each fold's best macro F1 and the out-of-fold (OOF) macro F1 over all folds, held
    out (each fold's predictions thresholded with thresholds tuned on the other folds' only):
    the figure to compare options by; the in-sample figure (thresholds tuned on all OOF
    predictions and scored on them) beside it. Run again, it skips finished folds and resumes
    the interrupted one; options left out come from the experiment. Under 'torchrun
    --nproc-per-node N -m hpatool cv ...' every fold trains with DDP.

    Example: hpatool cv --dataset kaggle-train --name r50 --arch resnet50 --epochs 20
    """
    options = dict(locals())  # the parameters as given (None = not given), before anything else
    for own in ("name", "folds", "fold", "config", "json_", "home"):
        options.pop(own)
    from hpatool.engine.distributed import env_rank
    from hpatool.engine.training.cv import cross_validate

    main_rank = env_rank()[0] == 0
    result = cross_validate(
        options,
        name=name,
        folds=folds,
        fold_list=list(fold) if fold else None,
        config_file=config,
        home=home if home is not None else ROOT_HOME.get(),
        fold_progress=_fold_progress(main_rank and not json_),
    )
    if main_rank:
        _print_result(result, json_)


def _fold_progress(enabled: bool) -> FoldProgress:
    """``fold_progress`` for ``cross_validate``: a header line per fold, then its train bar."""
    from hpatool.cli.train import _train_progress

    @contextlib.contextmanager
    def progress(plan: FoldPlan, i: int, n: int) -> Iterator[ProgressCallback | None]:
        from hpatool.cli._console import out

        head = f"fold {plan.fold} ({i}/{n}, run {plan.run})"
        if plan.action == "skip":
            record = plan.record
            best = (
                f", best macro F1 {record.best_f1:.4f} (epoch {record.best_epoch})"
                if record is not None and record.best_f1 is not None
                else ""
            )
            status = record.status if record is not None else "done"
            if enabled:
                out().print(f"{head}: already {status}{best}; skipped", markup=False)
            yield None
            return
        if enabled:
            how = {"resume": "resuming", "train": "starting again" if plan.why else ""}[plan.action]
            note = f": {how} ({plan.why})" if how else ""
            out().print(f"[bold]{head}[/]{note}")
        with _train_progress(enabled=enabled) as callback:
            if i == 1:
                yield callback
                return

            def later_fold(event: TrainEvent) -> None:
                if event.kind == "start" and event.info.get("dedup_hint"):
                    # said once, for the first fold: the dataset is the same for every fold
                    event = dataclasses.replace(event, info={**event.info, "dedup_hint": []})
                callback(event)

            yield later_fold

    return progress


def _print_result(result: CvResult, json_: bool) -> None:
    from hpatool.cli._console import Table, out, print_json

    if json_:
        print_json(result.to_json())
        return
    console = out()
    table = Table(title=f"Experiment {result.experiment} (folds of {result.dataset})")
    for col in ("fold", "run", "status", "best epoch", "fold F1 (held out)"):
        table.add_column(col, justify="right" if col != "run" and col != "status" else "left")
    for f in result.folds:
        table.add_row(
            str(f.fold),
            f.run,
            f.status,
            "-" if f.best_epoch is None else str(f.best_epoch),
            "-" if f.best_f1 is None else f"{f.best_f1:.4f}",
        )
    console.print(table)
    console.print(_oof_line(result))


def _oof_line(result: CvResult) -> str:
    oof = result.oof
    if oof is None:
        return f"Out-of-fold: {result.oof_note or 'no OOF predictions yet'}."
    missing = f"; runs without oof.csv: {', '.join(oof.without_oof)}" if oof.without_oof else ""
    where = f"over {len(oof.ids):,} of {oof.dataset_samples:,} labelled samples of {oof.dataset}"
    if oof.heldout_macro_f1 is None:
        figure = (
            f"OOF macro F1 {oof.macro_f1:.4f} in sample (thresholds tuned on the predictions "
            f"scored; optimistic) {where}; no held-out figure with one fold"
        )
    else:
        figure = (
            f"OOF macro F1 [bold]{oof.heldout_macro_f1:.4f}[/] held out (each fold "
            f"thresholded as tuned on the others: the figure to compare by), "
            f"{oof.macro_f1:.4f} in sample, {where}"
        )
    return (
        f"{figure}{missing}; 'hpatool experiments show {result.experiment}' has the per-class "
        "figures"
    )
