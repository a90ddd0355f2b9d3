"""The epoch loop of a run, as ``fit`` drives it: announcing the run, one epoch after another
(train, validate, the metrics row, the best score), saving after each epoch and, with
``--checkpoint-every N``, every N steps inside one, and at the end the out-of-fold step
(``write_oof_step``: the best checkpoint scores the validation fold with the run's view into
``oof.csv``, and ``thresholds.json`` is tuned again on it). The steps themselves are
``hpatool.engine.training.steps.train_one_epoch`` and ``validate``."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpatool.engine.distributed import DistContext
from hpatool.engine.models.checkpoint import save_checkpoint
from hpatool.engine.training.build import TrainData, Trainer
from hpatool.engine.training.events import EventInfo, ProgressCallback, RunEvents
from hpatool.engine.training.resume import RunTarget, stop_error
from hpatool.engine.training.state import TrainState
from hpatool.engine.training.steps import ValidationResult, train_one_epoch, validate
from hpatool.engine.views import View
from hpatool.errors import HpaToolError, Interrupted, WorkFailed
from hpatool.registry import Registry, RunStatus
from hpatool.signals import deferred_interrupts, raise_held


@dataclass
class EpochRun:
    """Everything the epoch loop works with."""

    target: RunTarget
    data: TrainData
    trainer: Trainer
    state: TrainState
    resolved: dict[str, Any]
    reg: Registry
    ctx: DistContext
    events: RunEvents
    oof: OofResult | None = None  # set by write_oof_step when it scored the validation fold


@dataclass
class OofResult:
    """What the out-of-fold step wrote: ``oof.csv``'s macro F1 with its tuned thresholds."""

    macro_f1: float  # in sample: thresholds tuned on the predictions it scores
    thresholds: list[float]
    view: View
    text: str  # the view in words, as it really happened
    samples: int
    heldout_macro_f1: float = float("nan")  # split-half held-out (metrics.split_half)


def announce(
    target: RunTarget,
    data: TrainData,
    trainer: Trainer,
    state: TrainState,
    ctx: DistContext,
    progress: ProgressCallback | None,
) -> RunEvents:
    """The run's ``RunEvents`` (silent on ranks other than 0), once it has sent ``start``."""
    config, per_epoch = target.config, data.steps_per_epoch
    total = config.epochs * per_epoch
    budget = total if config.max_steps is None else min(total, config.max_steps)
    listener = progress if ctx.is_main else None
    events = RunEvents(listener, target.name, target.run_dir.path, config.epochs, budget, per_epoch)
    info: EventInfo = {
        "train_samples": len(data.parts.train),
        "val_samples": len(data.parts.val),
        "left_out": data.parts.left_out_lines(),
        "unsplit": data.parts.unsplit,
        "duplicates_removed": len(data.parts.duplicates_removed),
        # the datasets to give 'hpatool dedup' together, when it has not hashed some of them
        "dedup_hint": config.datasets if data.parts.not_deduplicated else [],
        "device": str(trainer.device),
        "world_size": ctx.world_size,
        "resumed": target.resumed,
        "cache": list(data.cached),  # datasets read from their decoded cache
        "ema": config.ema,  # 0: off
    }
    events("start", state.epoch + 1, state.step, info=info)
    return events


def train_epochs(run: EpochRun) -> str:
    """Train from the run's state to its last epoch or the step budget: ``done`` or
    ``stopped``. The registry says ``failed`` (or ``interrupted``: Ctrl-C, SIGTERM or SIGHUP)
    if it raises; an interruption or a full disk says how to go on (``resume.stop_error``)."""
    config, state = run.target.config, run.state
    status: str = RunStatus.DONE
    first_step = state.step
    try:
        for epoch in range(state.epoch, config.epochs):
            if config.max_steps is not None and state.step >= config.max_steps:
                status = RunStatus.STOPPED
                break
            complete, budget_spent = run_epoch(run, epoch)
            if not complete or (budget_spent and epoch + 1 < config.epochs):
                status = RunStatus.STOPPED
                break
        if needs_oof(run, trained=state.step != first_step):
            write_oof_step(run)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
        if run.ctx.is_main:
            with contextlib.suppress(HpaToolError):
                status = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
                run.reg.update_run(run.target.name, status=status)
        stopped = stop_error(exc, run.target, run.reg.path.parent)
        if stopped is not None:
            raise stopped from None
        raise
    if run.ctx.is_main:
        run.reg.update_run(run.target.name, status=status)
    return status


def run_epoch(run: EpochRun, epoch: int) -> tuple[bool, bool]:
    """Train (the rest of) 0-based ``epoch``, validate, save: ``(epoch complete, the step
    budget spent)``."""
    config, state, trainer, objects = run.target.config, run.state, run.trainer, run.trainer.objects
    objects.sampler.set_epoch(epoch, start=state.step_in_epoch * config.batch_size)
    stats = train_one_epoch(
        trainer.train_model,
        trainer.loss_fn,
        objects.optimizer,
        objects.scheduler,
        objects.scaler,
        run.data.train_loader,
        trainer.device,
        amp_dtype=trainer.amp_dtype,
        channels_last=trainer.channels_last,
        max_steps=None if config.max_steps is None else config.max_steps - state.step,
        on_step=run.events.step_callback(epoch, state.step, state.step_in_epoch),
        world_size=run.ctx.world_size,
        initial_loss_sum=state.epoch_loss_sum,
        on_checkpoint=step_saver(run, epoch),
        checkpoint_every=config.checkpoint_every,
        first_step=state.step,
        ema=objects.ema,
    )
    in_epoch = state.step_in_epoch + stats.steps
    step = state.step + stats.steps
    val_started = time.perf_counter()
    result = validate_epoch(run, epoch, step, in_epoch)
    val_seconds = time.perf_counter() - val_started
    metrics = result.metrics()
    thresholds = metrics.pop("thresholds")
    row = {
        "epoch": epoch + 1,
        "step": state.step + stats.steps,
        "partial": int(in_epoch < run.data.steps_per_epoch),
        "train_loss": stats.loss_sum / max(1, in_epoch),
        **metrics,
        "lr": float(objects.scheduler.get_last_lr()[0]),
        "images_per_s": stats.images_per_s,
        "seconds": stats.seconds,
        "val_seconds": val_seconds,
    }
    complete = state.finish_epoch(epoch, stats.steps, stats.loss_sum, run.data.steps_per_epoch)
    is_best = state.record(row)
    # The epoch's files (checkpoints, thresholds, metrics, curves) and its registry row are
    # written whole: a Ctrl-C or SIGTERM in between is held back and acted on after the
    # epoch's line, so a resume never finds checkpoint-last.pt ahead of checkpoint-best.pt.
    with deferred_interrupts() as held:
        if run.ctx.is_main:
            save_epoch(run, row, thresholds, is_best)
    run.ctx.barrier()
    run.events(
        "epoch",
        epoch + 1,
        state.step,
        step_in_epoch=in_epoch,
        loss=row["train_loss"],
        images_per_s=stats.images_per_s,
        metrics=row,
        best=is_best,
    )
    raise_held(held)
    return complete, stats.stopped


def validate_epoch(run: EpochRun, epoch: int, step: int, in_epoch: int) -> ValidationResult:
    """Validate 0-based ``epoch``'s model with the run's ``--val-view`` (the centre-crop loader,
    or the evaluation view through the scoring loop); a non-finite probability is an error."""
    config, trainer = run.target.config, run.trainer
    n_val = len(run.data.val_loader.sampler)  # type: ignore[arg-type]

    def on_batch(done: int) -> None:
        run.events(
            "validate", epoch + 1, step, step_in_epoch=in_epoch, val_done=done, val_total=n_val
        )

    on_batch(0)
    if config.val_view == "eval":
        result = validate_view(run, config.view, on_batch if run.ctx.is_main else None)
    else:
        result = validate(
            trainer.objects.eval_model,
            run.data.val_loader,
            trainer.device,
            amp_dtype=trainer.amp_dtype,
            channels_last=trainer.channels_last,
            ctx=run.ctx,
            n_total=len(run.data.parts.val),
            on_batch=on_batch if run.ctx.is_main else None,
        )
    check_validation_finite(run, result)
    return result


def save_epoch(run: EpochRun, row: dict[str, Any], thresholds: list[float], is_best: bool) -> None:
    """Rank 0, after an epoch: the checkpoints, ``thresholds.json`` on a new best, the metrics
    files, and the run's progress in the registry."""
    state, run_dir = run.state, run.target.run_dir
    checkpoint = state.to_checkpoint(
        run.trainer.objects, run.resolved, thresholds=thresholds, metrics=row
    )
    save_checkpoint(run_dir.last, checkpoint)
    keep = run.target.config.keep_checkpoints
    if keep is not None and not row["partial"]:
        run_dir.keep_epoch_checkpoint(checkpoint, int(row["epoch"]), keep)
    if is_best:
        save_checkpoint(run_dir.best, checkpoint)
        run_dir.write_thresholds(
            thresholds, row, row["epoch"], view=run.target.config.validation_view.to_json()
        )
    run_dir.write_history(state.history)
    run.reg.update_run(
        run.target.name, best_f1=state.best_f1, best_epoch=state.best_epoch, epochs_done=state.epoch
    )


def step_saver(run: EpochRun, epoch: int) -> Callable[[int, float], None] | None:
    """Rank 0's ``--checkpoint-every`` saver for 0-based ``epoch``: ``checkpoint-last.pt`` of
    the state after ``steps`` more steps of it (not validated: no thresholds, no metrics), from
    which ``--resume`` continues exactly; ``None`` without the option or on other ranks. The
    epoch's last step is left to ``save_epoch``."""
    if run.target.config.checkpoint_every is None or not run.ctx.is_main:
        return None
    state = run.state

    def save(steps: int, loss_sum: float) -> None:
        in_epoch = state.step_in_epoch + steps
        if in_epoch >= run.data.steps_per_epoch:
            return
        now = dataclasses.replace(
            state,
            epoch=epoch,
            step=state.step + steps,
            step_in_epoch=in_epoch,
            epoch_loss_sum=loss_sum,
        )
        checkpoint = now.to_checkpoint(
            run.trainer.objects, run.resolved, thresholds=None, metrics=None
        )
        save_checkpoint(run.target.run_dir.last, checkpoint)

    return save


# ------------------------------------------------------------------------------ out of fold


def check_validation_finite(run: EpochRun, result: ValidationResult) -> None:
    """A ``WorkFailed`` naming the run, the epoch's model and the first sample when a
    validation probability is not finite (a diverged run), never a silent "no label"."""
    bad = np.flatnonzero(~np.isfinite(result.probs).all(axis=1))
    if not bad.size:
        return
    sample = run.data.parts.val[int(bad[0])].id
    raise WorkFailed(
        f"run {run.target.name}: the model of epoch {run.state.epoch + 1} gave non-finite "
        f"probabilities (NaN or inf) for validation sample {sample!r} ({bad.size:,} samples): "
        "training diverged; train again with a lower --lr (or --no-amp)"
    )


def validate_view(
    run: EpochRun, view: View, on_batch: Callable[[int], None] | None
) -> ValidationResult:
    """Validation with ``view`` (``--val-view eval``): the validation fold scored as the
    out-of-fold step scores it (seed 0, sharded over the ranks), in the training dtype; the
    loss is BCE of the aggregated probabilities."""
    from hpatool.data.samples import targets_array

    model = run.trainer.objects.eval_model  # the moving average with --ema
    model.eval()  # train_one_epoch sets train mode again

    def progress(done: int, total: int) -> None:
        if on_batch is not None:
            on_batch(done)

    name = f"run {run.target.name} (epoch {run.state.epoch + 1})"
    probs = score_validation_fold(run, model, view, progress, name)
    targets = targets_array(run.data.parts.val).astype(np.float32)
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    return ValidationResult(loss=loss, probs=probs, targets=targets)


def score_validation_fold(
    run: EpochRun,
    model: torch.nn.Module,
    view: View,
    progress: Callable[[int, int], None] | None,
    model_name: str,
) -> np.ndarray:
    """``(n, 28)`` probabilities of the validation fold (in its order) under ``view``: seed 0,
    the training dtype, this rank's share scored and every rank's gathered."""
    from hpatool.engine.scoring.score import Scores, score

    config, trainer, ctx = run.target.config, run.trainer, run.ctx
    items = validation_items(run)
    local = score(
        model,
        items,
        view,
        mean=trainer.spec.mean,
        std=trainer.spec.std,
        batch_size=config.batch_size,
        workers=config.workers,
        device=trainer.device,
        seed=0,
        strict=True,
        rank=ctx.rank,
        world_size=ctx.world_size,
        progress=progress,
        amp_dtype=trainer.amp_dtype,
        model_name=model_name,
    )
    merged = Scores()
    for part in ctx.gather(local):
        merged.update(part)
    return np.stack([merged.probs[item.index] for item in items])


def validation_items(run: EpochRun) -> list[Any]:
    """The validation samples as ``ScoreItem``s numbered by their first dataset's positions
    (what ``predict`` numbers samples by, so their random windows are predict's)."""
    from hpatool.engine.scoring.score import ScoreItem

    positions = {s.id: i for i, s in enumerate(run.reg.samples(run.target.config.datasets[0]))}
    return [ScoreItem(positions[it.id], it.root, it.id, it.cache) for it in run.data.parts.val]


def needs_oof(run: EpochRun, *, trained: bool) -> bool:
    """Whether the run ends with the out-of-fold step: it has a best checkpoint, and it trained
    in this invocation, or has no ``oof.csv`` yet (killed while scoring it), or its stored view
    is not the run's view now (a resume with another ``--eval-crops``, say). Rank 0 decides."""
    from hpatool.engine.runs.oof import OOF_FILE
    from hpatool.engine.runs.run_dir import run_view as stored_view

    run_dir = run.target.run_dir
    decision = False
    if run.ctx.is_main and run_dir.best.is_file():
        decision = (
            trained
            or not (run_dir.path / OOF_FILE).is_file()
            or stored_view(run_dir.path) != run.target.config.view
        )
    return bool(run.ctx.broadcast(decision))


def write_oof_step(run: EpochRun) -> OofResult:
    """Score the validation fold with ``checkpoint-best.pt`` and the run's view (seed 0, the
    dataset positions ``predict`` numbers samples by), sharded over the ranks; rank 0 writes
    ``oof.csv`` and ``thresholds.json`` tuned on it (together: a Ctrl-C or SIGTERM is held
    back until both are written)."""
    from hpatool.data.samples import targets_array
    from hpatool.engine.metrics import heldout_macro_f1, macro_f1, tune_thresholds
    from hpatool.engine.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from hpatool.engine.runs.oof import OOF_FILE, write_oof

    config, trainer, ctx = run.target.config, run.trainer, run.ctx
    run_dir = run.target.run_dir
    parts = run.data.parts
    view = config.view
    text = view.text(tuple(run.data.image_sizes[config.datasets[0]]))  # type: ignore[arg-type]
    step = run.state.step
    epoch = run.state.epoch

    def progress(done: int, total: int) -> None:
        run.events("oof", epoch, step, val_done=done, val_total=total, info={"view": text})

    checkpoint = load_checkpoint(run_dir.best, map_location=trainer.device)
    model, _ = build_model_from_checkpoint(checkpoint, device=trainer.device)
    del checkpoint
    model = model.to(memory_format=torch.channels_last)
    name = f"run {run.target.name} ({run_dir.best.name})"
    probs = score_validation_fold(run, model, view, progress if ctx.is_main else None, name)
    del model
    items = parts.val
    y_true = targets_array(parts.val)
    thresholds = tune_thresholds(y_true, probs)
    result = OofResult(
        macro_f1=macro_f1(y_true, probs >= thresholds),
        thresholds=thresholds.tolist(),
        view=view,
        text=text,
        samples=len(items),
        heldout_macro_f1=heldout_macro_f1(y_true, probs),
    )
    with deferred_interrupts() as held:
        if ctx.is_main:
            write_oof(run_dir.path / OOF_FILE, [it.id for it in items], probs)
            run_dir.write_oof_thresholds(
                result.thresholds, result.view.to_json(), result.macro_f1, result.heldout_macro_f1
            )
    ctx.barrier()
    run.oof = result
    raise_held(held)
    return result
