"""The training loop, in the torchvision shape: ``train_one_epoch``, ``evaluate``, ``fit``.

``fit(options, home=..., resume=...)`` trains a 4-channel CNN on registered datasets:
validation is fold ``K`` of the first dataset, training everything else (see
``hpatool.data.samples.train_val_items``); rare classes are oversampled by the sampler
(``hpatool.data.sampling``); AdamW with a linear warm-up then a cosine decay over all steps
(``epochs x steps_per_epoch``); AMP (bf16 where supported, else fp16 with a GradScaler) and
channels_last on CUDA. After every epoch: validation loss and macro F1 (at 0.5 and with per-class
thresholds tuned on the validation predictions), a row in ``metrics.csv``, ``checkpoint-last.pt``
(atomic), ``checkpoint-best.pt`` + ``thresholds.json`` on a new best tuned macro F1, and
``curves.png``. ``config.json`` holds the resolved configuration; the run is in the registry.

Exact resume: every random choice is derived from the run seed (model init from
``torch.manual_seed(seed)``; the sampler's draw from ``(seed, epoch)``; each sample's crop and
flip from ``(seed, epoch, position)``), DataLoaders get their own generator so they never touch
the global RNG, and the checkpoint holds the model, optimizer, scheduler, scaler, epoch, step and
RNG states. On CPU with ``--workers 0`` a run stopped (``--max-steps``) and resumed ends with the
same weights, bit for bit, as one that was never stopped.

DDP: run under ``torchrun``; ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` come from the environment.
gloo on CPU, NCCL on CUDA. Each rank trains on its slice of the same seeded draw; ``--batch-size``
is per process. Validation is sharded over the ranks and the predictions are gathered, so every
rank computes the same metrics. Only rank 0 writes files and the registry.

The engine never prints: progress goes to an optional callback receiving ``TrainEvent``s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hpatool._io import write_text_atomic
from hpatool.data.samples import HpaDataset, check_crop, targets_array, train_val_items
from hpatool.data.sampling import (
    ShardSampler,
    WeightedEpochSampler,
    class_multipliers,
    sample_weights,
)
from hpatool.data.transforms import HPA_MEAN, HPA_STD
from hpatool.engine import checkpoint as ckpt_mod
from hpatool.engine.config import IDENTITY_KEYS, LOSSES, TrainConfig, train_config
from hpatool.engine.distributed import DistContext, resolve_device
from hpatool.engine.metrics import apply_thresholds, macro_f1, tune_thresholds
from hpatool.errors import AlreadyExists, DataError, HpaToolError, UsageError
from hpatool.labels import CLASS_NAMES, NUM_CLASSES
from hpatool.models import IN_CHANS, create_model, resolve_arch
from hpatool.plots import plot_curves
from hpatool.registry import Registry, check_name

FOCAL_GAMMA = 2.0
MAX_WARMUP_STEPS = 500
WARMUP_FRACTION = 0.05
CONFIG_FILE = ckpt_mod.CONFIG_FILE
METRICS_FILE = ckpt_mod.METRICS_FILE
THRESHOLDS_FILE = ckpt_mod.THRESHOLDS_FILE
CURVES_FILE = ckpt_mod.CURVES_FILE
METRIC_COLUMNS = (
    "epoch", "step", "partial", "train_loss", "val_loss", "macro_f1", "macro_f1_at_0.5", "lr",
    "images_per_s", "seconds",
)  # fmt: skip


def default_run_name(arch: str, fold: int) -> str:
    return f"{arch}-f{fold}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def warmup_steps_for(total_steps: int) -> int:
    """Linear warm-up length: 5% of all steps, at most 500."""
    return min(MAX_WARMUP_STEPS, int(WARMUP_FRACTION * total_steps))


def cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    """LR factor for step ``s``: linear ramp over ``warmup`` steps, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ------------------------------------------------------------------------------------ losses


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) with ``gamma``, no alpha, mean over elements."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def create_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "focal":
        return focal_loss
    raise UsageError(f"--loss {name} is invalid; use one of {', '.join(LOSSES)}")


# ---------------------------------------------------------------------------------- progress


@dataclass
class TrainEvent:
    """What the callback gets: ``kind`` is ``start``, ``step``, ``validate`` or ``epoch``."""

    kind: str
    name: str
    run_dir: Path
    epoch: int  # 1-based epoch being trained (or just finished, for "epoch")
    epochs: int
    step: int  # optimizer steps done in total
    total_steps: int  # the step budget of this invocation (epochs or --max-steps)
    step_in_epoch: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None  # running mean training loss of the epoch
    images_per_s: float | None = None
    metrics: dict[str, Any] | None = None
    best: bool = False
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[TrainEvent], None]


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
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
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
) -> EpochStats:
    """Train over ``loader`` (stopping after ``max_steps`` steps if given).

    ``on_step(steps_done, running_loss, images_per_s)`` is called after every step (every
    10th on CUDA, where reading the loss synchronises with the GPU).
    ``initial_loss_sum`` continues the loss sum of an epoch resumed in its middle, so that the
    epoch's mean loss comes out exactly as if it had never stopped.
    """
    model.train()
    started = time.perf_counter()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    epoch_sum = torch.tensor(initial_loss_sum, dtype=torch.float64, device=device)
    steps = samples = 0
    stopped = False
    for x, y in loader:
        if max_steps is not None and steps >= max_steps:
            stopped = True
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
        # reading the loss waits for the GPU: on CUDA only every 10th step
        if on_step is not None and (device.type != "cuda" or steps % 10 == 0):
            elapsed = time.perf_counter() - started
            on_step(steps, float(total_loss.item()) / steps, samples / elapsed if elapsed else 0.0)
    if max_steps is not None and steps >= max_steps:
        stopped = True
    seconds = time.perf_counter() - started
    mean_loss = float(total_loss.item()) / steps if steps else float("nan")
    return EpochStats(
        steps=steps,
        samples=samples,
        loss=mean_loss,
        loss_sum=float(epoch_sum.item()),
        seconds=seconds,
        stopped=stopped,
    )


@dataclass
class EvalResult:
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
def evaluate(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: DataLoader[Any],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ctx: DistContext | None = None,
    n_total: int | None = None,
) -> EvalResult:
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
    if ctx is not None and ctx.distributed:
        parts = ctx.gather((local_p, local_t, loss_sum))
        n = n_total if n_total is not None else sum(p[0].shape[0] for p in parts)
        all_p = np.zeros((n, NUM_CLASSES), np.float32)
        all_t = np.zeros((n, NUM_CLASSES), np.float32)
        for rank, (p, t, _) in enumerate(parts):
            all_p[rank :: ctx.world_size] = p  # ShardSampler order: rank, rank + W, ...
            all_t[rank :: ctx.world_size] = t
        total_loss = sum(part[2] for part in parts)
        return EvalResult(loss=total_loss / max(1, n), probs=all_p, targets=all_t)
    return EvalResult(loss=loss_sum / max(1, local_p.shape[0]), probs=local_p, targets=local_t)


# -------------------------------------------------------------------------------------- files


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def write_thresholds(
    path: Path, thresholds: Sequence[float], metrics: dict[str, Any], epoch: int
) -> None:
    doc = {
        "thresholds": [float(t) for t in thresholds],
        "macro_f1": float(metrics["macro_f1"]),
        "macro_f1_at_0.5": float(metrics["macro_f1_at_0.5"]),
        "epoch": int(epoch),
        "checkpoint": ckpt_mod.BEST,
        "class_names": list(CLASS_NAMES),
    }
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


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


def _check_resume_config(saved: dict[str, Any], options: dict[str, Any], path: Path) -> None:
    """Refuse to resume with options that would change what the run is."""
    given_arch = options.get("arch")
    if given_arch is not None and resolve_arch(given_arch) != resolve_arch(saved["arch"]):
        raise UsageError(
            f"checkpoint {path} is of --arch {saved.get('arch')}, not {given_arch}; resume "
            "with the run's arch or start a new run with another --name"
        )
    for key in IDENTITY_KEYS:
        if key == "arch" or options.get(key) is None:
            continue
        value = options[key]
        if key == "datasets":
            value = list(value)
        if value != saved.get(key):
            flag = "dataset" if key == "datasets" else key.replace("_", "-")

            def show(v: Any) -> str:
                return " ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)

            raise UsageError(
                f"--{flag} {show(value)} differs from the run's {show(saved.get(key))} in {path}; "
                "resume with the same value (or leave it out) or start a new run with another "
                "--name"
            )


def _check_own_checkpoint(
    checkpoint: dict[str, Any], saved: dict[str, Any], name: str, reg: Registry, path: Path
) -> None:
    """Refuse a checkpoint that belongs to another run (copied in, or another run's folder)."""
    other = saved.get("name")
    if other and other != name:
        raise DataError(
            f"{path} is a checkpoint of run {other!r}, not {name!r}; resume {other!r} instead "
            "or start a new run"
        )
    if reg.has_run(name):
        registered = reg.run(name).arch
        if resolve_arch(str(checkpoint.get("arch"))) != resolve_arch(registered):
            raise DataError(
                f"{path} holds a {checkpoint.get('arch')} model but run {name!r} is registered as "
                f"{registered}; the file is not this run's checkpoint"
            )


def _stale_run(reg: Registry, name: str) -> bool:
    """A run that failed or was interrupted before its first checkpoint: nothing to resume,
    so a new run may take its name (the old row is replaced when the new one registers)."""
    record = reg.run(name)
    return (
        record.status in ("failed", "interrupted") and not (record.out_dir / ckpt_mod.LAST).exists()
    )


def create_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters: ~10x faster steps on CPU) where available."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _loader_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def fit(
    options: dict[str, Any] | TrainConfig,
    *,
    home: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> FitResult:
    """Train (or, with ``resume``, continue) a run; see the module docstring.

    ``options`` holds the ``hpatool train`` options by their ``TrainConfig`` names; with
    ``resume``, missing ones come from the run's checkpoint. Returns a ``FitResult`` on every
    rank; only rank 0 writes files and the registry.
    """
    opts = options.to_json() if isinstance(options, TrainConfig) else dict(options)
    ctx = DistContext.from_env()
    device = resolve_device(str(opts.get("device") or "auto"), ctx)
    ctx.init(device)
    try:
        return _fit(opts, ctx, device, home=home, resume=resume, progress=progress)
    finally:
        ctx.destroy()


def _fit(
    opts: dict[str, Any],
    ctx: DistContext,
    device: torch.device,
    *,
    home: str | Path | None,
    resume: bool,
    progress: ProgressCallback | None,
) -> FitResult:
    reg = Registry.open(home)
    try:
        return _fit_with_registry(opts, ctx, device, reg, resume=resume, progress=progress)
    finally:
        reg.close()


def _resolve_run(
    opts: dict[str, Any], ctx: DistContext, reg: Registry, resume: bool
) -> tuple[TrainConfig, str, Path, dict[str, Any] | None]:
    """The config, run name, run folder and (with ``resume``) the loaded last checkpoint."""
    name = opts.get("name")
    if resume:
        if not name:
            raise UsageError("--resume needs --name RUN (see 'hpatool runs list')")
        check_name(name, "run")
        run_dir = (
            reg.run(name).out_dir
            if reg.has_run(name)
            else Path(opts.get("out") or "runs").expanduser().resolve() / name
        )
        last = run_dir / ckpt_mod.LAST
        if not last.is_file():
            raise UsageError(
                f"--resume: run {name!r} has no {ckpt_mod.LAST} in {run_dir} (no epoch finished "
                "yet, or a different --out); start it again with another --name"
            )
        checkpoint = ckpt_mod.load_checkpoint(last)
        saved = checkpoint.get("config", {}).get("options", {})
        _check_own_checkpoint(checkpoint, saved, name, reg, last)
        _check_resume_config(saved, opts, last)
        config = train_config({**opts, "name": name}, base=saved)
        if config.epochs * max(1, checkpoint["steps_per_epoch"]) < checkpoint["step"]:
            raise UsageError(
                f"--epochs {config.epochs} is fewer than the {checkpoint['epoch']} epochs run "
                f"{name!r} has done; give more --epochs"
            )
        config.validate()
        return config, name, run_dir, checkpoint
    config = train_config(opts)
    config.validate()
    if not name:
        name = ctx.broadcast(default_run_name(config.arch, config.fold))
        config.name = name
    check_name(name, "run")
    if reg.has_run(name) and not _stale_run(reg, name):
        raise AlreadyExists(
            f"run {name!r} already exists in {reg.path}; pass --resume to continue it or choose "
            "another --name"
        )
    run_dir = Path(config.out).expanduser().resolve() / name
    if (run_dir / ckpt_mod.LAST).exists():
        raise AlreadyExists(
            f"{run_dir} already holds a run ({ckpt_mod.LAST}); pass --resume to continue it or "
            "choose another --name or --out"
        )
    return config, name, run_dir, None


def _fit_with_registry(
    opts: dict[str, Any],
    ctx: DistContext,
    device: torch.device,
    reg: Registry,
    *,
    resume: bool,
    progress: ProgressCallback | None,
) -> FitResult:
    config, name, run_dir, checkpoint = _resolve_run(opts, ctx, reg, resume)

    # ---- data (checked on every rank before anything is written)
    parts = train_val_items(reg, config.datasets, config.fold, config.limit)
    if checkpoint is not None:
        saved_split = checkpoint["config"].get("split")
        if saved_split is not None and saved_split != parts.split:
            raise UsageError(
                f"dataset {config.datasets[0]!r} was re-split since run {name!r} started "
                f"({saved_split} -> {parts.split}); its validation fold has changed, start a new "
                "run"
            )
    sizes = check_crop(config.crop, [*parts.val, *parts.train])
    train_targets = targets_array(parts.train)
    multipliers = class_multipliers(config.oversample, train_targets)
    weights = sample_weights(train_targets, multipliers)
    sampler = WeightedEpochSampler(
        weights, seed=config.seed, rank=ctx.rank, world_size=ctx.world_size
    )
    steps_per_epoch = sampler.per_rank // config.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the {sampler.per_rank} training "
            f"samples per process; use --batch-size {max(1, sampler.per_rank)} or less"
        )
    total_steps = config.epochs * steps_per_epoch
    warmup = warmup_steps_for(total_steps)

    use_cuda = device.type == "cuda"
    amp_dtype: torch.dtype | None = None
    if use_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    channels_last = use_cuda
    timm_name = resolve_arch(config.arch)
    spec = ckpt_mod.ModelSpec(
        arch=config.arch,
        timm_name=timm_name,
        in_chans=IN_CHANS,
        num_classes=NUM_CLASSES,
        crop=config.crop,
        mean=HPA_MEAN,
        std=HPA_STD,
        class_names=CLASS_NAMES,
        datasets=tuple(config.datasets),
        image_size=sizes.get(config.datasets[0]),
    )
    resolved: dict[str, Any] = {
        "options": config.to_json(),
        "timm_name": timm_name,
        "split": parts.split,
        "train_samples": len(parts.train),
        "val_samples": len(parts.val),
        "train_samples_per_dataset": parts.per_dataset,
        "skipped_unlabelled": parts.skipped_unlabelled,
        "removed_overlap": parts.removed_overlap,
        "removed_duplicates": parts.removed_duplicates,
        "image_sizes": {k: list(v) for k, v in sizes.items()},
        "class_multipliers": multipliers.tolist(),
        "world_size": ctx.world_size,
        "global_batch_size": config.batch_size * ctx.world_size,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "optimizer": "AdamW",
        "schedule": "linear warm-up, then cosine to 0 over all steps",
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "channels_last": channels_last,
        "model_spec": spec.to_json(),
    }

    # ---- model, optimizer, schedule
    _set_seeds(config.seed)
    pretrained = None if checkpoint is not None else config.pretrained
    model = create_model(
        config.arch, in_chans=IN_CHANS, num_classes=NUM_CLASSES, pretrained=pretrained
    )
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as exc:
            raise UsageError(
                f"checkpoint of run {name!r} does not fit --arch {config.arch}: "
                f"{' '.join(str(exc).split())[:160]}"
            ) from None
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, config.lr, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, warmup)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start_epoch = step = step_in_epoch = 0
    epoch_loss_sum = 0.0  # loss sum of an epoch stopped in its middle
    best_f1: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])  # keeps this run's lr lambda
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = int(checkpoint["epoch"])
        step = int(checkpoint["step"])
        step_in_epoch = int(checkpoint.get("step_in_epoch", 0))
        epoch_loss_sum = float(checkpoint.get("epoch_loss_sum", 0.0)) if step_in_epoch else 0.0
        best_f1 = checkpoint.get("best_f1")
        best_epoch = checkpoint.get("best_epoch")
        history = list(checkpoint.get("history", []))
        if step_in_epoch and checkpoint["sampler"].get("world_size") != ctx.world_size:
            raise UsageError(
                f"run {name!r} stopped in the middle of an epoch with "
                f"{checkpoint['sampler'].get('world_size')} processes; resume it with as many"
            )
        ckpt_mod.restore_rng_state(checkpoint["rng"])

    train_model: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if use_cuda else None
        )
    loss_fn = create_loss(config.loss)

    # ---- loaders
    train_ds = HpaDataset(parts.train, config.crop)
    val_ds = HpaDataset(parts.val, config.crop)
    loader_kw: dict[str, Any] = {
        "num_workers": config.workers,
        "pin_memory": use_cuda,
        "persistent_workers": config.workers > 0,
    }
    train_loader = DataLoader(
        train_ds,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        generator=_loader_generator(config.seed),
        **loader_kw,
    )
    val_loader = DataLoader(
        val_ds,
        batch_size=config.batch_size,
        sampler=ShardSampler(len(val_ds), ctx.rank, ctx.world_size),
        generator=_loader_generator(config.seed + 1),
        **loader_kw,
    )

    # ---- register the run, write config.json (rank 0), then everyone starts together
    ctx.barrier()  # every rank has passed its checks before rank 0 registers the name
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None and reg.has_run(name):
            reg.update_run(name, status="running", config=resolved)
        else:  # a new run, a resumed run missing from this registry, or a stale one replaced
            reg.create_run(
                name,
                arch=config.arch,
                datasets=config.datasets,
                fold=config.fold,
                config=resolved,
                out_dir=run_dir,
                replace=checkpoint is None and reg.has_run(name) and _stale_run(reg, name),
            )
        write_text_atomic(run_dir / CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")
    ctx.barrier()

    budget = total_steps if config.max_steps is None else min(total_steps, config.max_steps)

    def emit(kind: str, epoch: int, **kw: Any) -> None:
        if progress is not None and ctx.is_main:
            progress(
                TrainEvent(
                    kind=kind,
                    name=name,
                    run_dir=run_dir,
                    epoch=epoch,
                    epochs=config.epochs,
                    step=kw.pop("step", step),
                    total_steps=budget,
                    steps_per_epoch=steps_per_epoch,
                    **kw,
                )
            )

    emit(
        "start",
        start_epoch + 1,
        info={
            "train_samples": len(parts.train),
            "val_samples": len(parts.val),
            "device": str(device),
            "world_size": ctx.world_size,
            "resumed": checkpoint is not None,
        },
    )
    status = "done"
    try:
        for epoch in range(start_epoch, config.epochs):
            if config.max_steps is not None and step >= config.max_steps:
                status = "stopped"
                break
            sampler.set_epoch(epoch, start=step_in_epoch * config.batch_size)
            base_step, base_in_epoch = step, step_in_epoch

            def on_step(
                done: int,
                loss: float,
                ips: float,
                _e: int = epoch,
                _b: int = base_step,
                _i: int = base_in_epoch,
            ) -> None:
                emit(
                    "step",
                    _e + 1,
                    step=_b + done,
                    step_in_epoch=_i + done,
                    loss=loss,
                    images_per_s=ips,
                )

            left = None if config.max_steps is None else config.max_steps - step
            stats = train_one_epoch(
                train_model,
                loss_fn,
                optimizer,
                scheduler,
                scaler,
                train_loader,
                device,
                amp_dtype=amp_dtype,
                channels_last=channels_last,
                max_steps=left,
                on_step=on_step if progress is not None else None,
                world_size=ctx.world_size,
                initial_loss_sum=epoch_loss_sum,
            )
            step += stats.steps
            step_in_epoch += stats.steps
            partial = step_in_epoch < steps_per_epoch
            emit("validate", epoch + 1, step_in_epoch=step_in_epoch)
            result = evaluate(
                model,
                loss_fn,
                val_loader,
                device,
                amp_dtype=amp_dtype,
                channels_last=channels_last,
                ctx=ctx,
                n_total=len(val_ds),
            )
            metrics = result.metrics()
            thresholds = metrics.pop("thresholds")
            row = {
                "epoch": epoch + 1,
                "step": step,
                "partial": int(partial),
                "train_loss": stats.loss_sum / max(1, step_in_epoch),
                **metrics,
                "lr": float(scheduler.get_last_lr()[0]),
                "images_per_s": stats.images_per_s,
                "seconds": stats.seconds,
            }
            history = [r for r in history if r["epoch"] != epoch + 1] + [row]
            is_best = best_f1 is None or metrics["macro_f1"] > best_f1
            if is_best:
                best_f1, best_epoch = float(metrics["macro_f1"]), epoch + 1
            epochs_done = epoch + (0 if partial else 1)
            state = {
                "arch": config.arch,
                "timm_name": timm_name,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epochs_done,
                "step": step,
                "step_in_epoch": step_in_epoch if partial else 0,
                "epoch_loss_sum": stats.loss_sum if partial else 0.0,
                "steps_per_epoch": steps_per_epoch,
                "rng": ckpt_mod.capture_rng_state(),
                "sampler": sampler.state_dict(),
                "config": resolved,
                "model_spec": spec.to_json(),
                "best_f1": best_f1,
                "best_epoch": best_epoch,
                "thresholds": [float(t) for t in thresholds],
                "metrics": row,
                "history": history,
            }
            if ctx.is_main:
                ckpt_mod.save_checkpoint(run_dir / ckpt_mod.LAST, state)
                if is_best:
                    ckpt_mod.save_checkpoint(run_dir / ckpt_mod.BEST, state)
                    write_thresholds(run_dir / THRESHOLDS_FILE, thresholds, metrics, epoch + 1)
                write_metrics_csv(run_dir / METRICS_FILE, history)
                plot_curves(history, run_dir / CURVES_FILE)
                reg.update_run(
                    name, best_f1=best_f1, best_epoch=best_epoch, epochs_done=epochs_done
                )
            ctx.barrier()
            emit(
                "epoch",
                epoch + 1,
                step_in_epoch=step_in_epoch,
                loss=row["train_loss"],
                images_per_s=stats.images_per_s,
                metrics=row,
                best=is_best,
            )
            if partial:
                status = "stopped"
                break
            step_in_epoch = 0
            epoch_loss_sum = 0.0
            if stats.stopped and epoch + 1 < config.epochs:
                status = "stopped"
                break
    except BaseException as exc:
        if ctx.is_main:
            failed = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(HpaToolError):
                reg.update_run(name, status=failed)
        raise
    if ctx.is_main:
        reg.update_run(name, status=status)
    epochs_done = history[-1]["epoch"] - int(history[-1]["partial"]) if history else 0
    return FitResult(
        name=name,
        run_dir=run_dir,
        epochs_done=epochs_done,
        steps=step,
        best_f1=best_f1,
        best_epoch=best_epoch,
        status=status,
        history=history,
        config=resolved,
    )
