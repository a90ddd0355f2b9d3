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
from typing import Any

from hpatool.engine.distributed import DistContext
from hpatool.engine.models.checkpoint import save_checkpoint
from hpatool.engine.training.build import TrainData, Trainer
from hpatool.engine.training.epoch_run import EpochRun
from hpatool.engine.training.events import EventInfo, ProgressCallback, RunEvents
from hpatool.engine.training.oof_step import (
    check_validation_finite,
    needs_oof,
    validate_view,
    write_oof_step,
)
from hpatool.engine.training.resume import RunTarget, stop_error
from hpatool.engine.training.state import TrainState
from hpatool.engine.training.steps import ValidationResult, train_one_epoch, validate
from hpatool.errors import HpaToolError, Interrupted
from hpatool.registry import RunStatus
from hpatool.signals import deferred_interrupts, raise_held


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
