"""What a training run is built from, before its first step: the samples and their loaders
(``build_data``), the model and what trains it (``build_trainer``), and the resolved
configuration that ``config.json``, the registry and every checkpoint hold (``resolved_config``).

Everything here is checked on every rank before anything is written. The model is created right
after ``torch.manual_seed(seed)``, so its initial weights depend on the seed alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hpatool.data.samples import (
    HpaDataset,
    Item,
    TrainValItems,
    check_crop,
    loader_workers,
    targets_array,
    train_val_items,
)
from hpatool.data.sampling import (
    ShardSampler,
    WeightedEpochSampler,
    class_multipliers,
    sample_weights,
)
from hpatool.data.transforms import HPA_MEAN, HPA_STD
from hpatool.engine.config import TrainConfig
from hpatool.engine.distributed import DistContext
from hpatool.engine.models.checkpoint import ModelSpec
from hpatool.engine.models.factory import IN_CHANS, create_model, resolve_arch
from hpatool.engine.training.ema import ModelEma
from hpatool.engine.training.optim import (
    LossFn,
    create_loss,
    create_optimizer,
    create_scheduler,
    loader_generator,
    set_seeds,
    warmup_steps_for,
)
from hpatool.engine.training.provenance import provenance
from hpatool.engine.training.resume import RunTarget, check_same_split
from hpatool.engine.training.state import TrainObjects
from hpatool.errors import UsageError
from hpatool.labels import CLASS_NAMES, NUM_CLASSES
from hpatool.registry import Registry


@dataclass
class TrainData:
    """The training and validation samples of a run, and their loaders."""

    parts: TrainValItems
    image_sizes: dict[str, tuple[int, int]]  # (height, width) per dataset
    multipliers: np.ndarray  # the oversampling multiplier of each class
    sampler: WeightedEpochSampler
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    steps_per_epoch: int  # per process
    cached: list[str] = field(default_factory=list)  # datasets read from their decoded cache

    def close(self) -> None:
        """Stop the loaders' worker processes (and the pin-memory thread) now.

        Their workers are persistent, so they would otherwise live until the loaders are
        garbage-collected; when a run is stopped, its traceback keeps them alive until the
        interpreter exits, and torch skips its clean-up then."""
        for loader in (self.train_loader, self.val_loader):
            iterator = getattr(loader, "_iterator", None)
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            loader._iterator = None


def build_data(
    target: RunTarget, reg: Registry, ctx: DistContext, device: torch.device
) -> TrainData:
    """The samples of the run (a resumed run's validation fold must not have changed), the
    oversampling sampler of this rank, and the loaders."""
    config = target.config
    parts = train_val_items(reg, config.datasets, config.fold, config.limit, strict=config.strict)
    check_same_split(target, parts)
    cached = with_caches(reg, parts, config.cache)
    sizes = check_crop(config.crop, [*parts.val, *parts.train])
    train_targets = targets_array(parts.train)
    multipliers = class_multipliers(config.oversample, train_targets)
    sampler = WeightedEpochSampler(
        sample_weights(train_targets, multipliers),
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    steps_per_epoch = sampler.per_rank // config.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the {sampler.per_rank} training "
            f"samples per process; use --batch-size {max(1, sampler.per_rank)} or less"
        )
    workers = loader_workers(config.workers)  # one warning, not torch's one per loader
    loader_kw: dict[str, Any] = {
        "batch_size": config.batch_size,
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    train_loader = DataLoader(
        HpaDataset(parts.train, config.crop, augment=config.augment, sizes=sizes),
        sampler=sampler,
        drop_last=True,
        generator=loader_generator(config.seed),
        **loader_kw,
    )
    val_loader = DataLoader(
        HpaDataset(parts.val, config.crop, sizes=sizes),
        sampler=ShardSampler(len(parts.val), ctx.rank, ctx.world_size),
        generator=loader_generator(config.seed + 1),
        **loader_kw,
    )
    return TrainData(
        parts, sizes, multipliers, sampler, train_loader, val_loader, steps_per_epoch, cached
    )


def with_caches(reg: Registry, parts: TrainValItems, mode: str) -> list[str]:
    """Point the items of every dataset with a complete, up-to-date decoded cache at their
    arrays (``hpatool.data.cache.use_cache``: a stale cache is refused); the datasets that
    have one."""
    from hpatool.data.cache import use_cache

    names = list(dict.fromkeys(it.dataset for it in [*parts.val, *parts.train]))
    views = {name: use_cache(reg, name, mode) for name in names}
    views = {name: view for name, view in views.items() if view is not None}
    if not views:
        return []

    def cached(items: list[Item]) -> list[Item]:
        out = []
        for it in items:
            view = views.get(it.dataset)
            path = view.path(it.id) if view is not None else None
            out.append(dataclasses.replace(it, cache=path) if path is not None else it)
        return out

    parts.train, parts.val = cached(parts.train), cached(parts.val)
    return sorted(views)


@dataclass
class Trainer:
    """The model and what trains it, on its device."""

    objects: TrainObjects  # model (bare), optimizer, scheduler, scaler, sampler
    loss_fn: LossFn
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    spec: ModelSpec
    train_model: nn.Module  # the model the steps run through: DDP-wrapped under torchrun

    def distribute(self, ctx: DistContext) -> None:
        """Wrap the model in DDP when running under torchrun (after any restore)."""
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.objects.model, device_ids=ids)


def build_trainer(
    config: TrainConfig, data: TrainData, device: torch.device, *, fresh: bool = True
) -> Trainer:
    """The seeded model (from ``--pretrained`` weights if ``fresh`` and given), AdamW, the
    schedule over all steps, the AMP scaler and the loss."""
    use_cuda = device.type == "cuda"
    amp_dtype: torch.dtype | None = None
    if use_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    spec = ModelSpec(
        arch=config.arch,
        timm_name=resolve_arch(config.arch),
        in_chans=IN_CHANS,
        num_classes=NUM_CLASSES,
        crop=config.crop,
        mean=HPA_MEAN,
        std=HPA_STD,
        class_names=CLASS_NAMES,
        datasets=tuple(config.datasets),
        image_size=data.image_sizes.get(config.datasets[0]),
    )
    set_seeds(config.seed)
    model = create_model(
        config.arch,
        in_chans=IN_CHANS,
        num_classes=NUM_CLASSES,
        pretrained=config.pretrained if fresh else None,
    )
    if fresh and config.head_bias == "prior" and _new_head(config.pretrained):
        init_head_bias(model, effective_class_frequency(data))
    model.to(device)
    if use_cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, config.lr, config.weight_decay)
    scheduler = create_scheduler(optimizer, config.epochs * data.steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = ModelEma(model, config.ema) if config.ema else None
    objects = TrainObjects(model, optimizer, scheduler, scaler, data.sampler, ema)
    loss_fn = create_loss(config.loss)
    return Trainer(objects, loss_fn, device, amp_dtype, use_cuda, spec, train_model=model)


def _new_head(pretrained: str | None) -> bool:
    """Whether the classifier head starts new: no ``--pretrained``, or ImageNet weights (a
    weight file or a run's checkpoint may bring a trained head, which is kept)."""
    from hpatool.engine.models.factory import IMAGENET

    return pretrained is None or pretrained.lower() == IMAGENET


def effective_class_frequency(data: TrainData) -> np.ndarray:
    """Each class's share of the samples the oversampling sampler draws (the sampling weights
    times the labels): the frequency the model sees in training."""
    targets = targets_array(data.parts.train).astype(np.float64)
    weights = sample_weights(targets, data.multipliers).astype(np.float64)
    return (weights[:, None] * targets).sum(axis=0) / max(weights.sum(), 1e-12)


def init_head_bias(model: nn.Module, frequency: np.ndarray) -> bool:
    """``--head-bias prior``: the classifier's bias set to the log-odds of each class's
    frequency (clipped to 1e-4..1 - 1e-4), so that step one predicts the classes' base rates
    instead of 0.5 for all 28 (a BCE of about 0.69 a class); ``False`` when the model has no
    classifier with a bias of 28 outputs."""
    from hpatool.engine.models.factory import classifier_name

    name = classifier_name(model)
    head = model.get_submodule(name) if name else None
    bias = getattr(head, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.shape != (len(frequency),):
        return False
    p = np.clip(np.asarray(frequency, dtype=np.float64), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        bias.copy_(torch.from_numpy(np.log(p / (1 - p))).to(bias.dtype))
    return True


def resolved_config(
    config: TrainConfig, data: TrainData, trainer: Trainer, ctx: DistContext
) -> dict[str, Any]:
    """What ``config.json`` holds: the options, and everything resolved from them."""
    parts = data.parts
    total_steps = config.epochs * data.steps_per_epoch
    amp = trainer.amp_dtype
    return {
        "options": config.to_json(),
        "timm_name": trainer.spec.timm_name,
        "split": parts.split,
        "train_samples": len(parts.train),
        "val_samples": len(parts.val),
        "train_samples_per_dataset": parts.per_dataset,
        "skipped_unlabelled": parts.skipped_unlabelled,
        "removed_overlap": parts.removed_overlap,
        "removed_duplicates": parts.removed_duplicates,
        # samples whose images are not there, per dataset and reason (hpatool.availability)
        "left_out": parts.left_out,
        "val_left_out": parts.val_left_out,
        "unsplit": parts.unsplit,
        # training samples that duplicate a validation sample (hpatool dedup), left out
        "duplicates_removed": [list(key) for key in parts.duplicates_removed],
        "image_sizes": {k: list(v) for k, v in data.image_sizes.items()},
        "class_multipliers": data.multipliers.tolist(),
        # the share of the training samples having each class (predict's frequency warning)
        "class_frequency": targets_array(parts.train).mean(axis=0, dtype=np.float64).tolist(),
        "world_size": ctx.world_size,
        "global_batch_size": config.batch_size * ctx.world_size,
        "steps_per_epoch": data.steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps_for(total_steps),
        "optimizer": "AdamW",
        "schedule": "linear warm-up, then cosine to 0 over all steps",
        "device": str(trainer.device),
        "amp": str(amp).replace("torch.", "") if amp else None,
        "channels_last": trainer.channels_last,
        "model_spec": trainer.spec.to_json(),
        # versions, git commit, device, the --pretrained file's sha256 (engine.training.provenance)
        "provenance": provenance(config.pretrained, trainer.device),
    }
