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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hpatool.engine.config import TrainConfig, train_config, with_legacy
from hpatool.engine.models.checkpoint import save_checkpoint
from hpatool.engine.runs.experiments import check_experiment_run, ensure_experiment
from hpatool.engine.runs.run_dir import BEST, RunDir, write_metrics_csv, write_thresholds
from hpatool.engine.training.swa import (
    AverageProgress,
    Loading,
    SourceData,
    averaged_model,
    chosen_checkpoints,
    mean_checkpoint,
    recompute_batchnorm,
    score_oof,
    validate_centre,
)
from hpatool.errors import AlreadyExists, UsageError
from hpatool.registry import Registry, RunRecord, RunStatus, check_name


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

    _, chosen, dest = _checked(reg, run, last, name)
    checkpoint, config = mean_checkpoint(chosen)
    options = dict(config["options"])
    run_config = _train_config(options, name, experiment, dest.parent)
    check_experiment_run(reg, run_config, name)
    dev = resolve_device(device, DistContext())
    amp_dtype = scoring_dtype(config.get("amp"), dev)
    model = averaged_model(checkpoint, dev)
    data = SourceData.of(reg, run, checkpoint, cache)
    loading = Loading(
        int(batch_size or options.get("batch_size") or 16),
        default_workers() if workers is None else workers,
        dev,
        amp_dtype,
    )
    bn_layers = recompute_batchnorm(model, data, options, loading, progress)
    metrics, thresholds = validate_centre(model, data, loading)
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


def _checked(
    reg: Registry, run: str, last: int, name: str
) -> tuple[RunRecord, list[tuple[int, Path]], Path]:
    """The source run, its last ``last`` kept epoch checkpoints and the new run's folder,
    every refusal before any work: a bad ``--last``, too few kept epochs, a taken name or
    folder."""
    if last < 1:
        raise UsageError(f"--last {last} is invalid; average at least 1 epoch checkpoint")
    source = reg.run(run)
    chosen = chosen_checkpoints(source, last)
    name = check_name(name, "run")
    if reg.has_run(name):
        raise AlreadyExists(f"run {name!r} already exists in {reg.path}; choose another --name")
    dest = source.out_dir.parent / name
    if dest.exists() or dest.is_symlink():
        raise AlreadyExists(f"{dest} already exists; choose another --name or move it away")
    return source, chosen, dest


def _publish(
    reg: Registry,
    dest: Path,
    checkpoint: dict[str, Any],
    row: dict[str, Any],
    thresholds: list[float],
    run_config: TrainConfig,
    model: nn.Module,
    data: SourceData,
    loading: Loading,
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
        try:
            staging.rename(dest)
        except OSError:
            if not dest.exists():
                raise
            raise AlreadyExists(
                f"{dest} was made while this average ran (another 'runs average --name "
                f"{name}'?); nothing was registered: choose another --name"
            ) from None
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
    data: SourceData,
    loading: Loading,
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
    probs = score_oof(model, data, view, loading, progress, config.name or "")
    y_true = targets_array(data.parts.val)
    tuned = tune_thresholds(y_true, probs)
    in_sample = macro_f1(y_true, probs >= tuned)
    heldout = heldout_macro_f1(y_true, probs)
    write_oof(run_dir.oof, [it.id for it in data.parts.val], probs)
    run_dir.write_oof_thresholds(tuned.tolist(), view.to_json(), in_sample, heldout)
    size = data.sizes[config.datasets[0]]
    return in_sample, (None if heldout != heldout else heldout), view.text(size)
