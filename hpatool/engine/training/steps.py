"""The training step functions, in the torchvision shape: ``train_one_epoch`` (one pass over the
training loader: forward under autocast, loss, backward through the AMP scaler, optimizer and
schedule steps, the ``--ema`` update) and ``validate`` (the validation loader's probabilities,
gathered over the ranks, with the BCE loss and the epoch's held-out, in-sample and at-0.5 macro
F1s: ``ValidationResult.metrics``). ``engine.training.epochs`` calls them each epoch and
``engine.training.fit`` drives it; nothing here writes files or prints."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from hpatool.data.transforms import HPA_MEAN, HPA_STD, normalize
from hpatool.engine.distributed import DistContext
from hpatool.engine.metrics import apply_thresholds, heldout_macro_f1, macro_f1, tune_thresholds
from hpatool.engine.training.ema import ModelEma
from hpatool.engine.training.optim import LossFn
from hpatool.labels import NUM_CLASSES


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
    mean: Sequence[float] = HPA_MEAN,
    std: Sequence[float] = HPA_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to ``device`` (uint8: normalised there, ``transforms.normalize``) and run
    the model under autocast: ``(float logits, y)``."""
    x = normalize(x.to(device, non_blocking=True), mean, std)
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
    ema: ModelEma | None = None,
) -> EpochStats:
    """Train over ``loader`` (stopping after ``max_steps`` steps if given).

    ``on_step(steps_done, running_loss, images_per_s)`` is called after every step (every
    10th on CUDA, where reading the loss synchronises with the GPU).
    ``initial_loss_sum`` continues the loss sum of an epoch resumed in its middle, so that the
    epoch's mean loss comes out exactly as if it had never stopped.
    ``on_checkpoint(steps_done, epoch_loss_sum)`` is called after every step whose run-wide
    number (``first_step`` + steps done) is a multiple of ``checkpoint_every``.
    ``ema`` (``--ema``): the moving average, updated after every step.
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
        if ema is not None:
            ema.update()
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
        """The epoch's figures: ``macro_f1`` held out (thresholds tuned on one half of the
        validation predictions and scored on the other, both ways, averaged over seeded
        splittings: ``metrics.split_half``; what picks the best epoch), ``macro_f1_in_sample``
        (thresholds tuned on all of them and scored on them: optimistic), ``macro_f1_at_0.5``,
        and the thresholds tuned on all of them (those the run stores)."""
        thresholds = tune_thresholds(self.targets, self.probs)
        heldout = heldout_macro_f1(self.targets, self.probs)
        in_sample = macro_f1(self.targets, apply_thresholds(self.probs, thresholds))
        return {
            "val_loss": self.loss,
            "macro_f1_at_0.5": macro_f1(self.targets, apply_thresholds(self.probs, 0.5)),
            "macro_f1": in_sample if heldout != heldout else heldout,  # 1 sample: no halves
            "macro_f1_in_sample": in_sample,
            "thresholds": thresholds.tolist(),
        }


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ctx: DistContext | None = None,
    n_total: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ValidationResult:
    """Predict ``loader`` (a ``ShardSampler`` slice under DDP) and gather all ranks' outputs;
    ``on_batch(samples done)`` after each batch (this rank's).

    The loss is always BCE with logits (the mean over samples and classes), whatever loss the
    run trains with, so that validation losses compare across runs (a focal run's training
    loss is on another scale).

    ``model`` must be the bare model (not DDP-wrapped): ranks may hold different numbers of
    validation samples, so no collective may run inside the loop.
    """
    model.eval()
    probs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    loss_sum = 0.0
    for x, y in loader:
        logits, y = _forward(model, x, y, device, amp_dtype, channels_last)
        bce = F.binary_cross_entropy_with_logits(logits, y.float())
        loss_sum += float(bce.item()) * x.shape[0]
        probs.append(torch.sigmoid(logits).cpu().numpy())
        targets.append(y.cpu().numpy())
        if on_batch is not None:
            on_batch(sum(len(p) for p in probs))
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
