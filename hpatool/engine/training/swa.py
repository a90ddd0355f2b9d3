"""The pieces of ``runs average`` (``engine.training.average``): the kept epoch checkpoints chosen
and averaged (``mean_checkpoint``: float tensors in float64, integer buffers from the newest),
the averaged model built, the source run's samples (``SourceData``: its training and validation
parts as it trained), BatchNorm's statistics recomputed on the training samples
(``recompute_batchnorm``, through ``torch.optim.swa_utils.update_bn``), the centre-crop
validation (``validate_centre``) and the run's view over the validation fold (``score_oof``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpatool.engine.models.checkpoint import load_checkpoint, model_spec
from hpatool.engine.runs.run_dir import RunDir
from hpatool.errors import DataError, UsageError
from hpatool.registry import Registry, RunRecord

#: ``progress(stage, done, total)``: stage ``"batchnorm"`` (training samples through the model)
#: or ``"oof"`` (validation images scored with the run's view).
AverageProgress = Callable[[str, int, int], None]


def chosen_checkpoints(source: RunRecord, last: int) -> list[tuple[int, Path]]:
    kept = RunDir(source.out_dir).epoch_checkpoints()
    if len(kept) < last:
        have = (
            f"kept {len(kept)} epoch checkpoints (epochs {', '.join(str(e) for e, _ in kept)})"
            if kept
            else "kept no epoch checkpoints (checkpoint-epoch-NNN.pt)"
        )
        how = (
            f"use --last {len(kept)} or fewer"
            if kept
            else f"train it with --keep-checkpoints {last} (or more) first"
        )
        raise UsageError(f"run {source.name!r} {have} in {source.out_dir}; {how}")
    return kept[-last:]


def mean_checkpoint(chosen: list[tuple[int, Path]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The newest checkpoint of ``chosen`` with its ``model`` replaced by the mean of all their
    models (floating-point tensors; integer ones from the newest), and its configuration."""
    docs = [(path, load_checkpoint(path)) for _, path in chosen]
    newest_path, newest = docs[-1]
    config = newest.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
        raise DataError(f"{newest_path}: no run configuration; it is not a run's epoch checkpoint")
    states = []
    for path, doc in docs:
        state = doc.get("model")
        if doc.get("timm_name") != newest.get("timm_name") or not isinstance(state, dict):
            raise DataError(
                f"{path}: a {doc.get('timm_name')} model, not the {newest.get('timm_name')} of "
                f"{newest_path.name}; average the checkpoints of one run"
            )
        if {k: tuple(v.shape) for k, v in state.items()} != {
            k: tuple(v.shape) for k, v in newest["model"].items()
        }:
            raise DataError(
                f"{path}: its weights do not have the shapes of {newest_path.name}'s; average "
                "the checkpoints of one run"
            )
        states.append(state)
    mean: dict[str, torch.Tensor] = {}
    for key, value in newest["model"].items():
        if value.is_floating_point():
            stacked = torch.stack([s[key].to(torch.float64) for s in states])
            mean[key] = stacked.mean(dim=0).to(value.dtype)
        else:
            mean[key] = value.clone()
    doc = {k: v for k, v in newest.items() if k not in ("format", "version", "ema")}
    doc["model"] = mean
    return doc, config


def averaged_model(checkpoint: dict[str, Any], device: torch.device) -> nn.Module:
    """The checkpoint's model (its ``model_spec``) with its (averaged) weights, on ``device``."""
    from hpatool.engine.models.factory import create_model

    spec = model_spec(checkpoint)
    model = create_model(spec.timm_name, in_chans=spec.in_chans, num_classes=spec.num_classes)
    model.load_state_dict(checkpoint["model"])
    return model.to(device)


@dataclass(frozen=True)
class Loading:
    """How the averaged model reads and runs its inputs."""

    batch_size: int
    workers: int
    device: torch.device
    amp_dtype: torch.dtype | None  # scoring's: the dtype the run trained in (scoring_dtype)


@dataclass
class SourceData:
    """The source run's samples (its training and validation parts, as it trained)."""

    parts: Any  # TrainValItems
    sizes: dict[str, tuple[int, int]]
    crop: int
    positions: dict[str, int]  # validation ids -> positions in the first dataset (predict's)
    mean: tuple[float, ...]  # the model's input normalisation (its ModelSpec)
    std: tuple[float, ...]

    @classmethod
    def of(cls, reg: Registry, run: str, checkpoint: dict[str, Any], cache: str) -> SourceData:
        from hpatool.data.samples import check_crop, train_val_items
        from hpatool.engine.runs.oof import OOF_FILE, read_oof
        from hpatool.engine.training.build import with_caches

        options = checkpoint["config"]["options"]
        spec = model_spec(checkpoint)
        datasets = [str(d) for d in options["datasets"]]
        parts = train_val_items(reg, datasets, int(options["fold"]), options.get("limit"))
        oof = reg.run(run).out_dir / OOF_FILE
        if oof.is_file():
            ids, _ = read_oof(oof)
            if sorted(ids) != sorted(it.id for it in parts.val):
                raise UsageError(
                    f"the validation fold of run {run!r} ({oof}) is not fold {options['fold']} "
                    f"of dataset {datasets[0]!r} now (its split or its images changed since the "
                    "run trained): the average could not be scored out of fold"
                )
        with_caches(reg, parts, cache)
        crop = int(options["crop"])
        sizes = check_crop(crop, [*parts.val, *parts.train])
        positions = {s.id: i for i, s in enumerate(reg.samples(datasets[0]))}
        return cls(parts, sizes, crop, positions, spec.mean, spec.std)


def recompute_batchnorm(
    model: nn.Module,
    data: SourceData,
    options: dict[str, Any],
    loading: Loading,
    progress: AverageProgress | None,
) -> int:
    """BatchNorm's running statistics recomputed from the training samples (float32, each
    sample once, with the run's augmentation); the number of BatchNorm layers."""
    from torch.optim.swa_utils import update_bn
    from torch.utils.data import DataLoader

    from hpatool.data.samples import HpaDataset, loader_workers
    from hpatool.data.transforms import normalize

    layers = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not layers:
        return 0
    augment = str(options.get("augment") or "dihedral")
    dataset = HpaDataset(data.parts.train, data.crop, augment=augment, sizes=data.sizes)
    seeds = np.random.default_rng(int(options.get("seed") or 0)).integers(0, 2**31, len(dataset))
    keys = [(i, int(s)) for i, s in enumerate(seeds)]
    loader = DataLoader(
        dataset,
        batch_size=loading.batch_size,
        sampler=keys,
        num_workers=loader_workers(loading.workers),
    )
    total = len(dataset)

    def batches() -> Iterator[torch.Tensor]:
        done = 0
        for x, _ in loader:
            yield normalize(x.to(loading.device), data.mean, data.std)
            done += x.shape[0]
            if progress is not None:
                progress("batchnorm", done, total)

    update_bn(batches(), model)
    model.eval()
    return layers


def validate_centre(
    model: nn.Module, data: SourceData, loading: Loading
) -> tuple[dict[str, Any], list[float]]:
    """The averaged model validated as an epoch is (the centre crop of each validation
    sample): its ``metrics.csv`` figures and the thresholds tuned on it."""
    from torch.utils.data import DataLoader

    from hpatool.data.samples import HpaDataset, loader_workers
    from hpatool.engine.training.steps import validate

    dataset = HpaDataset(data.parts.val, data.crop, data.mean, data.std, sizes=data.sizes)
    loader = DataLoader(
        dataset, batch_size=loading.batch_size, num_workers=loader_workers(loading.workers)
    )
    result = validate(model, loader, loading.device, amp_dtype=loading.amp_dtype)
    metrics = result.metrics()
    thresholds = metrics.pop("thresholds")
    return metrics, thresholds


def score_oof(
    model: nn.Module,
    data: SourceData,
    view: Any,
    loading: Loading,
    progress: AverageProgress | None,
    name: str,
) -> np.ndarray:
    """``(n, 28)`` probabilities of the validation fold under the run's ``view`` (seed 0,
    the run's dtype: what the out-of-fold step of a run does)."""
    from hpatool.engine.scoring.score import ScoreItem, score

    items = [ScoreItem(data.positions[it.id], it.root, it.id, it.cache) for it in data.parts.val]

    def on_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("oof", done, total)

    scores = score(
        model,
        items,
        view,
        mean=data.mean,
        std=data.std,
        batch_size=loading.batch_size,
        workers=loading.workers,
        device=loading.device,
        seed=0,
        strict=True,
        progress=on_progress,
        amp_dtype=loading.amp_dtype,
        model_name=f"run {name}",
    )
    return np.stack([scores.probs[item.index] for item in items])
