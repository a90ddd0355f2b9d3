"""``hpatool runs average RUN --last K --name NEW``: a new run whose weights are the mean of the
last K epoch checkpoints of RUN (stochastic weight averaging, as the 2018 3rd-place team used).

RUN must have been trained with ``--keep-checkpoints`` (``checkpoint-epoch-NNN.pt``, written by
``RunDir.keep_epoch_checkpoint``). Every floating-point tensor of the K state dicts is averaged
(in float64, stored in its own dtype); integer buffers come from the newest. BatchNorm's running
statistics are not averaged but recomputed (``torch.optim.swa_utils.update_bn``): one pass over
RUN's training samples, each with the run's ``--augment`` draw from a seed of its own (the run's
``--seed``), in float32. Then the new run is scored and thresholded like any run: the centre-crop
validation of an epoch (``metrics.csv``'s one row, ``thresholds.json``) and the run's view over
its validation fold (``oof.csv``, ``thresholds.json`` tuned on it).

The new run's folder is ``NEW`` beside RUN's; it is written under a temporary name and renamed
whole, then registered (``done``; with ``--experiment EXP`` as the model of RUN's fold in
experiment EXP, as ``train --experiment`` would), so a failure leaves neither a folder nor a
registry row. It has ``checkpoint-best.pt`` and no ``checkpoint-last.pt``: it is not trained
further (``train --resume`` refuses it); ``--pretrained NEW/checkpoint-best.pt`` starts a new
run from it. ``config.json`` holds RUN's configuration with ``"averaged"``: the source run, the
epochs and files averaged, and the BatchNorm pass.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpatool.engine.config import TrainConfig, train_config, with_legacy
from hpatool.engine.models.checkpoint import load_checkpoint, model_spec, save_checkpoint
from hpatool.engine.runs.experiments import check_experiment_run, ensure_experiment
from hpatool.engine.runs.run_dir import BEST, RunDir, write_metrics_csv, write_thresholds
from hpatool.errors import AlreadyExists, DataError, UsageError
from hpatool.registry import Registry, RunRecord, RunStatus, check_name

#: ``progress(stage, done, total)``: stage ``"batchnorm"`` (training samples through the model)
#: or ``"oof"`` (validation images scored with the run's view).
AverageProgress = Callable[[str, int, int], None]


@dataclass
class AveragedRun:
    record: RunRecord
    source: str
    epochs: list[int]  # the epochs averaged
    bn_layers: int  # BatchNorm layers whose statistics were recomputed
    bn_samples: int  # training samples they were recomputed on
    metrics: dict[str, Any]  # the centre-crop validation row (metrics.csv)
    oof_macro_f1: float  # in sample (thresholds tuned on oof.csv)
    oof_macro_f1_heldout: float | None
    view_text: str
    experiment_created: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.record.name,
            "source": self.source,
            "epochs": self.epochs,
            "folder": str(self.record.out_dir),
            "experiment": self.record.experiment,
            "experiment_created": self.experiment_created,
            "bn_layers": self.bn_layers,
            "bn_samples": self.bn_samples,
            "macro_f1": self.metrics["macro_f1"],
            "macro_f1_in_sample": self.metrics["macro_f1_in_sample"],
            "val_loss": self.metrics["val_loss"],
            "oof_macro_f1": self.oof_macro_f1,
            "oof_macro_f1_heldout": self.oof_macro_f1_heldout,
            "view": self.view_text,
        }


def average_run(
    reg: Registry,
    run: str,
    *,
    last: int,
    name: str,
    experiment: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    batch_size: int | None = None,
    cache: str = "auto",
    progress: AverageProgress | None = None,
) -> AveragedRun:
    """Write and register run ``name``, the average of ``run``'s last ``last`` kept epochs;
    see the module docstring."""
    from hpatool.engine.config import default_workers
    from hpatool.engine.distributed import DistContext, resolve_device
    from hpatool.engine.scoring.score import scoring_dtype

    if last < 1:
        raise UsageError(f"--last {last} is invalid; average at least 1 epoch checkpoint")
    source = reg.run(run)
    chosen = _chosen_checkpoints(source, last)
    name = check_name(name, "run")
    if reg.has_run(name):
        raise AlreadyExists(f"run {name!r} already exists in {reg.path}; choose another --name")
    dest = source.out_dir.parent / name
    if dest.exists() or dest.is_symlink():
        raise AlreadyExists(f"{dest} already exists; choose another --name or move it away")
    checkpoint, config = _mean_checkpoint(chosen)
    options = dict(config["options"])
    run_config = _train_config(options, name, experiment, dest.parent)
    check_experiment_run(reg, run_config, name)
    dev = resolve_device(device, DistContext())
    amp_dtype = scoring_dtype(config.get("amp"), dev)
    model = _model(checkpoint, dev)
    data = _Data.of(reg, run, checkpoint, cache)
    loading = _Loading(
        int(batch_size or options.get("batch_size") or 16),
        default_workers() if workers is None else workers,
        dev,
        amp_dtype,
    )
    bn_layers = _recompute_batchnorm(model, data, options, loading, progress)
    metrics, thresholds = _validate(model, data, loading)
    epoch = chosen[-1][0]
    row = {"epoch": epoch, "step": checkpoint.get("step"), "partial": 0, **metrics}
    averaged: dict[str, Any] = {
        "from": run,
        "epochs": [e for e, _ in chosen],
        "checkpoints": [path.name for _, path in chosen],
        "bn_layers": bn_layers,
        "bn_samples": len(data.parts.train) if bn_layers else 0,
        "bn_seed": int(options.get("seed") or 0),
    }
    new_config = {**config, "options": run_config.to_json(), "averaged": averaged}
    new_config.pop("process", None)
    checkpoint.update(
        config=new_config,
        model=model.state_dict(),
        epoch=epoch,
        metrics=row,
        thresholds=thresholds,
        best_f1=row["macro_f1"],
        best_epoch=epoch,
        history=[row],
    )
    oof, record, created = _publish(
        reg, dest, checkpoint, row, thresholds, run_config, model, data, loading, progress
    )
    return AveragedRun(
        record=record,
        source=run,
        epochs=averaged["epochs"],
        bn_layers=bn_layers,
        bn_samples=averaged["bn_samples"],
        metrics=row,
        oof_macro_f1=oof[0],
        oof_macro_f1_heldout=oof[1],
        view_text=oof[2],
        experiment_created=created,
    )


def _publish(
    reg: Registry,
    dest: Path,
    checkpoint: dict[str, Any],
    row: dict[str, Any],
    thresholds: list[float],
    run_config: TrainConfig,
    model: nn.Module,
    data: _Data,
    loading: _Loading,
    progress: AverageProgress | None,
) -> tuple[tuple[float, float | None, str], RunRecord, bool]:
    """Write the run's files under a temporary name beside ``dest``, rename the folder to
    ``dest``, then register the run (``done``; in its experiment): a failure leaves neither
    folder nor row. ``(the OOF figures, the registry row, whether the experiment is new)``."""
    name = dest.name
    experiment = run_config.experiment
    new_config = checkpoint["config"]
    epoch = row["epoch"]
    staging = dest.parent / f".{name}.partial-{os.getpid()}"
    try:
        staging.mkdir(parents=True)
        oof = _write_files(
            RunDir(staging), checkpoint, row, thresholds, run_config, model, data, loading, progress
        )
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        with reg.transaction():
            check_experiment_run(reg, run_config, name)  # again, under the write lock
            created = experiment is not None and not reg.has_experiment(experiment)
            ensure_experiment(reg, run_config)
            reg.create_run(
                name,
                arch=run_config.arch,
                datasets=run_config.datasets,
                fold=run_config.fold,
                config=new_config,
                out_dir=dest,
                experiment=experiment,
                status=RunStatus.DONE,
            )
            record = reg.update_run(
                name, best_f1=row["macro_f1"], best_epoch=epoch, epochs_done=epoch
            )
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return oof, record, created


def _train_config(
    options: dict[str, Any], name: str, experiment: str | None, out: Path
) -> TrainConfig:
    """The averaged run's options: the source run's, under its own name (and experiment)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in with_legacy(options).items() if k in known}
    given.update(name=name, experiment=experiment, out=str(out), keep_checkpoints=None)
    config = train_config(given)
    if experiment is not None:
        check_name(experiment, "experiment")
    return config


def _write_files(
    run_dir: RunDir,
    checkpoint: dict[str, Any],
    row: dict[str, Any],
    thresholds: list[float],
    config: TrainConfig,
    model: nn.Module,
    data: _Data,
    loading: _Loading,
    progress: AverageProgress | None,
) -> tuple[float, float | None, str]:
    """The run's files in ``run_dir``: ``config.json``, ``checkpoint-best.pt``,
    ``metrics.csv``, ``thresholds.json``, then ``oof.csv`` and the thresholds tuned on it;
    ``(OOF macro F1 in sample, held out, the view in words)``."""
    from hpatool.data.samples import targets_array
    from hpatool.engine.metrics import heldout_macro_f1, macro_f1, tune_thresholds
    from hpatool.engine.runs.oof import write_oof

    run_dir.write_config(checkpoint["config"])
    save_checkpoint(run_dir.path / BEST, checkpoint)
    write_metrics_csv(run_dir.metrics, [row])
    write_thresholds(
        run_dir.thresholds, thresholds, row, row["epoch"], config.validation_view.to_json()
    )
    view = config.view
    probs = _score_oof(model, data, view, loading, progress, config.name or "")
    y_true = targets_array(data.parts.val)
    tuned = tune_thresholds(y_true, probs)
    in_sample = macro_f1(y_true, probs >= tuned)
    heldout = heldout_macro_f1(y_true, probs)
    write_oof(run_dir.oof, [it.id for it in data.parts.val], probs)
    run_dir.write_oof_thresholds(tuned.tolist(), view.to_json(), in_sample, heldout)
    size = data.sizes[config.datasets[0]]
    return in_sample, (None if heldout != heldout else heldout), view.text(size)


def _chosen_checkpoints(source: RunRecord, last: int) -> list[tuple[int, Path]]:
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


def _mean_checkpoint(chosen: list[tuple[int, Path]]) -> tuple[dict[str, Any], dict[str, Any]]:
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


def _model(checkpoint: dict[str, Any], device: torch.device) -> nn.Module:
    from hpatool.engine.models.factory import create_model

    spec = model_spec(checkpoint)
    model = create_model(spec.timm_name, in_chans=spec.in_chans, num_classes=spec.num_classes)
    model.load_state_dict(checkpoint["model"])
    return model.to(device)


@dataclass(frozen=True)
class _Loading:
    """How the averaged model reads and runs its inputs."""

    batch_size: int
    workers: int
    device: torch.device
    amp_dtype: torch.dtype | None  # scoring's: the dtype the run trained in (scoring_dtype)


@dataclass
class _Data:
    """The source run's samples (its training and validation parts, as it trained)."""

    parts: Any  # TrainValItems
    sizes: dict[str, tuple[int, int]]
    crop: int
    positions: dict[str, int]  # validation ids -> positions in the first dataset (predict's)
    mean: tuple[float, ...]  # the model's input normalisation (its ModelSpec)
    std: tuple[float, ...]

    @classmethod
    def of(cls, reg: Registry, run: str, checkpoint: dict[str, Any], cache: str) -> _Data:
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


def _recompute_batchnorm(
    model: nn.Module,
    data: _Data,
    options: dict[str, Any],
    loading: _Loading,
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


def _validate(
    model: nn.Module, data: _Data, loading: _Loading
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


def _score_oof(
    model: nn.Module,
    data: _Data,
    view: Any,
    loading: _Loading,
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
