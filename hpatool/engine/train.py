"""The training loop, in the torchvision shape: ``train_one_epoch``, ``validate``, ``fit``.

``fit(options, home=..., resume=...)`` trains a 4-channel CNN on registered datasets:
validation is fold ``K`` of the first dataset, training everything else (see
``hpatool.data.samples.train_val_items``); rare classes are oversampled by the sampler
(``hpatool.data.sampling``); AdamW with a linear warm-up then a cosine decay over all steps
(``engine.optim``); AMP (bf16 where supported, else fp16 with a GradScaler) and channels_last on
CUDA. After every epoch: validation loss and macro F1 (at 0.5 and with per-class thresholds tuned
on the validation predictions), a row in ``metrics.csv``, ``checkpoint-last.pt`` (atomic),
``checkpoint-best.pt`` + ``thresholds.json`` on a new best tuned macro F1, and ``curves.png``
(``engine.run_dir``). ``config.json`` holds the resolved configuration; the run is in the
registry.

Exact resume: every random choice is derived from the run seed (model init from
``torch.manual_seed(seed)``; the sampler's draw from ``(seed, epoch)``; each sample's crop and
flip from ``(seed, epoch, position)``), DataLoaders get their own generator so they never touch
the global RNG, and the checkpoint holds the model, optimizer, scheduler, scaler, epoch, step and
RNG states (``engine.state``). On CPU with ``--workers 0`` a run stopped (``--max-steps``) and
resumed ends with the same weights, bit for bit, as one that was never stopped.

DDP: run under ``torchrun``; ``engine.distributed`` reads the environment. gloo on CPU, NCCL on
CUDA. Each rank trains on its slice of the same seeded draw; ``--batch-size`` is per process.
Validation is sharded over the ranks and the predictions are gathered, so every rank computes
the same metrics. Only rank 0 writes files and the registry.

The engine never prints: progress goes to an optional callback receiving ``TrainEvent``s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hpatool.convert.pool import sigterm_as_interrupt
from hpatool.engine.build import TrainData, Trainer, build_data, build_trainer, resolved_config
from hpatool.engine.checkpoint import save_checkpoint
from hpatool.engine.config import TrainConfig, given_train_options
from hpatool.engine.distributed import DistContext, resolve_device
from hpatool.engine.events import ProgressCallback, RunEvents
from hpatool.engine.metrics import apply_thresholds, macro_f1, tune_thresholds
from hpatool.engine.optim import LossFn
from hpatool.engine.resume import RunTarget, register_run, resolve_run, stop_error
from hpatool.engine.state import TrainState
from hpatool.errors import HpaToolError, Interrupted
from hpatool.labels import NUM_CLASSES
from hpatool.registry import Registry

# ------------------------------------------------------------------------------------- epochs


@dataclass
class EpochStats:
    steps: int
    samples: int
    loss: float  # mean training loss over this call's steps
    loss_sum: float  # running sum of step losses (started at ``initial_loss_sum``)
    seconds: float
    stopped: bool  # --max-steps reached

    @property
    def images_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    if amp_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _forward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to ``device`` and run the model under autocast: ``(float logits, y)``."""
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp_dtype):
        logits = model(x)
    return logits.float(), y


def train_one_epoch(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: DataLoader[Any],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_steps: int | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    world_size: int = 1,
    initial_loss_sum: float = 0.0,
    on_checkpoint: Callable[[int, float], None] | None = None,
    checkpoint_every: int | None = None,
    first_step: int = 0,
) -> EpochStats:
    """Train over ``loader`` (stopping after ``max_steps`` steps if given).

    ``on_step(steps_done, running_loss, images_per_s)`` is called after every step (every
    10th on CUDA, where reading the loss synchronises with the GPU).
    ``initial_loss_sum`` continues the loss sum of an epoch resumed in its middle, so that the
    epoch's mean loss comes out exactly as if it had never stopped.
    ``on_checkpoint(steps_done, epoch_loss_sum)`` is called after every step whose run-wide
    number (``first_step`` + steps done) is a multiple of ``checkpoint_every``.
    """
    model.train()
    started = time.perf_counter()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    epoch_sum = torch.tensor(initial_loss_sum, dtype=torch.float64, device=device)
    steps = samples = 0
    for x, y in loader:
        if max_steps is not None and steps >= max_steps:
            break
        logits, y = _forward(model, x, y, device, amp_dtype, channels_last)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        steps += 1
        samples += x.shape[0] * world_size
        step_loss = loss.detach().to(torch.float64)
        total_loss += step_loss
        epoch_sum += step_loss
        if (
            on_checkpoint is not None
            and checkpoint_every
            and not (first_step + steps) % (checkpoint_every)
        ):
            on_checkpoint(steps, float(epoch_sum.item()))
        # reading the loss waits for the GPU: on CUDA only every 10th step
        if on_step is not None and (device.type != "cuda" or steps % 10 == 0):
            elapsed = time.perf_counter() - started
            on_step(steps, float(total_loss.item()) / steps, samples / elapsed if elapsed else 0.0)
    return EpochStats(
        steps=steps,
        samples=samples,
        loss=float(total_loss.item()) / steps if steps else float("nan"),
        loss_sum=float(epoch_sum.item()),
        seconds=time.perf_counter() - started,
        stopped=max_steps is not None and steps >= max_steps,
    )


@dataclass
class ValidationResult:
    loss: float
    probs: np.ndarray  # (n, 28) sigmoid outputs, in dataset order
    targets: np.ndarray  # (n, 28) 0/1

    def metrics(self) -> dict[str, Any]:
        thresholds = tune_thresholds(self.targets, self.probs)
        return {
            "val_loss": self.loss,
            "macro_f1_at_0.5": macro_f1(self.targets, apply_thresholds(self.probs, 0.5)),
            "macro_f1": macro_f1(self.targets, apply_thresholds(self.probs, thresholds)),
            "thresholds": thresholds.tolist(),
        }


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: LossFn,
    loader: DataLoader[Any],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ctx: DistContext | None = None,
    n_total: int | None = None,
) -> ValidationResult:
    """Predict ``loader`` (a ``ShardSampler`` slice under DDP) and gather all ranks' outputs.

    ``model`` must be the bare model (not DDP-wrapped): ranks may hold different numbers of
    validation samples, so no collective may run inside the loop.
    """
    model.eval()
    probs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    loss_sum = 0.0
    for x, y in loader:
        logits, y = _forward(model, x, y, device, amp_dtype, channels_last)
        loss_sum += float(loss_fn(logits, y).item()) * x.shape[0]
        probs.append(torch.sigmoid(logits).cpu().numpy())
        targets.append(y.cpu().numpy())
    local_p = np.concatenate(probs) if probs else np.zeros((0, NUM_CLASSES), np.float32)
    local_t = np.concatenate(targets) if targets else np.zeros((0, NUM_CLASSES), np.float32)
    if ctx is None or not ctx.distributed:
        return ValidationResult(loss_sum / max(1, local_p.shape[0]), local_p, local_t)
    parts = ctx.gather((local_p, local_t, loss_sum))
    n = n_total if n_total is not None else sum(p[0].shape[0] for p in parts)
    all_p = np.zeros((n, NUM_CLASSES), np.float32)
    all_t = np.zeros((n, NUM_CLASSES), np.float32)
    for rank, (p, t, _) in enumerate(parts):
        all_p[rank :: ctx.world_size] = p  # ShardSampler order: rank, rank + W, ...
        all_t[rank :: ctx.world_size] = t
    total_loss = sum(part[2] for part in parts)
    return ValidationResult(loss=total_loss / max(1, n), probs=all_p, targets=all_t)


# ---------------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    name: str
    run_dir: Path
    epochs_done: int
    steps: int
    best_f1: float | None
    best_epoch: int | None
    status: str  # "done" or "stopped" (--max-steps)
    history: list[dict[str, Any]]
    config: dict[str, Any]


def fit(
    options: TrainConfig | Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    home: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> FitResult:
    """Train (or, with ``resume``, continue) a run; see the module docstring.

    ``options``: a ``TrainConfig``, or the ``hpatool train`` options given, by name (``None`` =
    not given), over those of ``config_file`` (TOML, or a run's ``config.json``); with
    ``resume``, the options not given come from the run's checkpoint. Returns a ``FitResult`` on
    every rank; only rank 0 writes files and the registry.
    """
    given = given_train_options(options, config_file)
    ctx = DistContext.from_env()
    device = resolve_device(str(given.get("device") or "auto"), ctx)
    ctx.init(device)
    try:
        with sigterm_as_interrupt(hangup=True), Registry.open(home) as reg:
            target = resolve_run(given, resume, ctx, reg)
            data = build_data(target, reg, ctx, device)
            trainer = build_trainer(target.config, data, device, fresh=not target.resumed)
            state = TrainState()
            if target.checkpoint is not None:
                state = TrainState.restore(
                    target.checkpoint,
                    trainer.objects,
                    name=target.name,
                    arch=target.config.arch,
                    world_size=ctx.world_size,
                )
            trainer.distribute(ctx)
            resolved = resolved_config(target.config, data, trainer, ctx)
            register_run(reg, target, resolved, ctx)
            events = announce(target, data, trainer, state, ctx, progress)
            status = train_epochs(_Run(target, data, trainer, state, resolved, reg, ctx, events))
    finally:
        ctx.destroy()
    last = state.history[-1] if state.history else None
    return FitResult(
        name=target.name,
        run_dir=target.run_dir.path,
        epochs_done=last["epoch"] - int(last["partial"]) if last else 0,
        steps=state.step,
        best_f1=state.best_f1,
        best_epoch=state.best_epoch,
        status=status,
        history=state.history,
        config=resolved,
    )


@dataclass
class _Run:
    """Everything the epoch loop works with."""

    target: RunTarget
    data: TrainData
    trainer: Trainer
    state: TrainState
    resolved: dict[str, Any]
    reg: Registry
    ctx: DistContext
    events: RunEvents


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
    info = {
        "train_samples": len(data.parts.train),
        "val_samples": len(data.parts.val),
        "device": str(trainer.device),
        "world_size": ctx.world_size,
        "resumed": target.resumed,
    }
    events("start", state.epoch + 1, state.step, info=info)
    return events


def train_epochs(run: _Run) -> str:
    """Train from the run's state to its last epoch or the step budget: ``done`` or
    ``stopped``. The registry says ``failed`` (or ``interrupted``: Ctrl-C, SIGTERM or SIGHUP)
    if it raises; an interruption or a full disk says how to go on (``resume.stop_error``)."""
    config, state = run.target.config, run.state
    status = "done"
    try:
        for epoch in range(state.epoch, config.epochs):
            if config.max_steps is not None and state.step >= config.max_steps:
                status = "stopped"
                break
            complete, budget_spent = run_epoch(run, epoch)
            if not complete or (budget_spent and epoch + 1 < config.epochs):
                status = "stopped"
                break
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
        if run.ctx.is_main:
            with contextlib.suppress(HpaToolError):
                status = "interrupted" if interrupted else "failed"
                run.reg.update_run(run.target.name, status=status)
        stopped = stop_error(exc, run.target)
        if stopped is not None:
            raise stopped from None
        raise
    if run.ctx.is_main:
        run.reg.update_run(run.target.name, status=status)
    return status


def run_epoch(run: _Run, epoch: int) -> tuple[bool, bool]:
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
    )
    in_epoch = state.step_in_epoch + stats.steps
    run.events("validate", epoch + 1, state.step + stats.steps, step_in_epoch=in_epoch)
    result = validate(
        objects.model,
        trainer.loss_fn,
        run.data.val_loader,
        trainer.device,
        amp_dtype=trainer.amp_dtype,
        channels_last=trainer.channels_last,
        ctx=run.ctx,
        n_total=len(run.data.parts.val),
    )
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
    }
    complete = state.finish_epoch(epoch, stats.steps, stats.loss_sum, run.data.steps_per_epoch)
    is_best = state.record(row)
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
    return complete, stats.stopped


def save_epoch(run: _Run, row: dict[str, Any], thresholds: list[float], is_best: bool) -> None:
    """Rank 0, after an epoch: the checkpoints, ``thresholds.json`` on a new best, the metrics
    files, and the run's progress in the registry."""
    state, run_dir = run.state, run.target.run_dir
    checkpoint = state.to_checkpoint(
        run.trainer.objects, run.resolved, thresholds=thresholds, metrics=row
    )
    save_checkpoint(run_dir.last, checkpoint)
    if is_best:
        save_checkpoint(run_dir.best, checkpoint)
        run_dir.write_thresholds(thresholds, row, row["epoch"])
    run_dir.write_history(state.history)
    run.reg.update_run(
        run.target.name, best_f1=state.best_f1, best_epoch=state.best_epoch, epochs_done=state.epoch
    )


def step_saver(run: _Run, epoch: int) -> Callable[[int, float], None] | None:
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
