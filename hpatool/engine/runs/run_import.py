"""``hpatool runs import``: register a run folder trained elsewhere (another machine, another
registry) as a run of this registry.

``import_run`` reads the folder's ``config.json`` and ``metrics.csv`` (its best epoch and macro
F1, the full value from ``thresholds.json``), calls it ``done`` when all its epochs and its
``oof.csv`` are there, and adds it to its experiment as ``train --experiment`` would
(``engine.runs.experiments``). A run whose validation fold is not that fold of this registry's split
gets a ``SplitDiffers`` warning.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpatool._io import path_problem
from hpatool.engine.config import TrainConfig, train_config, with_legacy
from hpatool.engine.runs.experiments import check_experiment_run, ensure_experiment
from hpatool.engine.runs.run_dir import (
    CONFIG_FILE,
    METRICS_FILE,
    THRESHOLDS_FILE,
    best_row,
    read_metrics_csv,
)
from hpatool.errors import AlreadyExists, DataError, NotFound, UsageError
from hpatool.registry import Registry, RunRecord, RunStatus, check_name


class SplitDiffers(UserWarning):
    """An imported run was trained on another split of its dataset than the registry's: its
    validation fold is not a fold of this split, so its predictions are not out-of-fold."""


@dataclass
class ImportedRun:
    record: RunRecord
    experiment_created: bool = False
    notes: list[str] = field(default_factory=list)


def import_run(reg: Registry, folder: Path, *, name: str | None = None) -> ImportedRun:
    """Register the run folder ``folder`` (trained elsewhere) as run ``name`` (default: the
    name in its ``config.json``); see ``hpatool runs import``."""
    folder = Path(folder).expanduser().absolute()
    config, options, rows = _read_run_folder(folder)
    check_checkpoints(folder, config)
    run_name = check_name(str(name or options.get("name") or folder.name), "run")
    if reg.has_run(run_name):
        raise AlreadyExists(
            f"run {run_name!r} already exists in {reg.path}; import it under another name "
            "with --name NEW"
        )
    datasets = [str(d) for d in options.get("datasets") or []]
    if not datasets:
        raise DataError(f'{folder / CONFIG_FILE}: the run names no datasets ("options"."datasets")')
    unknown = [d for d in datasets if not reg.has_dataset(d)]
    if unknown:
        raise UsageError(
            f"run {run_name!r} was trained on dataset {unknown[0]!r}, which is not in "
            f"{reg.path}; register it first ('hpatool datasets add {unknown[0]} ...')"
        )
    fold = options.get("fold")
    fold = int(fold) if isinstance(fold, int) else None
    progress = _progress(folder, options, rows)
    result_notes: list[str] = []
    split = reg.split_info(datasets[0])
    if split is None:
        result_notes.append(f"dataset {datasets[0]!r} has no split in this registry")
    differs = split is not None and _other_split(reg, folder, config, datasets[0], fold, split)
    created = False
    experiment = options.get("experiment")
    with reg.transaction():
        if experiment is not None:
            experiment = check_name(str(experiment), "experiment")
            known = {f.name for f in dataclasses.fields(TrainConfig)}
            cfg = train_config(
                {
                    **{k: v for k, v in with_legacy(options).items() if k in known},
                    "name": run_name,
                    # a new experiment's later folds go beside the imported run
                    "out": str(folder.parent),
                }
            )
            check_experiment_run(reg, cfg, run_name)
            created = not reg.has_experiment(experiment)
            ensure_experiment(reg, cfg)
        reg.create_run(
            run_name,
            arch=str(options.get("arch") or config.get("arch") or "?"),
            datasets=datasets,
            fold=fold,
            config={k: v for k, v in config.items() if k != "process"},
            out_dir=folder,
            experiment=experiment,
            status=progress.status,
        )
        record = reg.update_run(
            run_name,
            best_f1=progress.best_f1,
            best_epoch=progress.best_epoch,
            epochs_done=progress.epochs_done,
        )
    if differs and split is not None:
        saved = config.get("split") or {}
        warnings.warn(
            f"run {run_name!r} was trained on a split of {datasets[0]!r} ({saved.get('folds')} "
            f"folds, seed {saved.get('seed')}) other than the registry's ({split['folds']} "
            f"folds, seed {split['seed']}): its validation fold is not fold {fold} of this "
            "split, so its predictions are not out-of-fold here",
            SplitDiffers,
            stacklevel=2,
        )
    return ImportedRun(record, created, result_notes)


def check_checkpoints(folder: Path, config: dict[str, Any]) -> None:
    """Every checkpoint of the folder loads with ``weights_only`` (a pickle that is not a torch
    checkpoint, or a truncated file, is refused naming it), is an hpatool checkpoint of the
    run's architecture, and its weights fit the model it describes; a folder with none is
    refused too: nothing that cannot be scored is registered."""
    from hpatool.engine.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from hpatool.engine.runs.run_dir import BEST, LAST

    found = [folder / name for name in (BEST, LAST) if (folder / name).is_file()]
    if not found:
        raise DataError(
            f"{folder} has no {BEST} nor {LAST}: there is no model to import; copy the run "
            "folder whole"
        )
    want = config.get("timm_name")
    for path in found:
        checkpoint = load_checkpoint(path)  # one line naming the file when it does not load
        if want and checkpoint.get("timm_name") not in (None, want):
            raise DataError(
                f"{path}: a checkpoint of {checkpoint.get('timm_name')}, not the run's {want} "
                f"({CONFIG_FILE}); it belongs to another run"
            )
        build_model_from_checkpoint(checkpoint, where=path)  # its weights fit its model


def _read_run_folder(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A run folder's ``config.json`` (and its ``"options"``) and ``metrics.csv`` rows; a folder
    that is not a run's, or files that are not a run's, is a one-line error."""
    if not folder.is_dir():
        raise NotFound(f"{folder}: {path_problem(folder, 'folder')} (give a run folder, OUT/NAME)")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UsageError(f"{folder} is not a run folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{config_path}: not a run's {CONFIG_FILE}: it is not JSON ({exc}); it is "
            "written by 'hpatool train'"
        ) from None
    options = config.get("options") if isinstance(config, dict) else None
    if not isinstance(options, dict):
        raise DataError(
            f'{config_path}: not a run\'s {CONFIG_FILE} (no "options" object); it is '
            "written by 'hpatool train'"
        )
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        raise UsageError(
            f"{folder} is not a finished run folder: it has no {METRICS_FILE} (no epoch finished)"
        )
    return config, options, read_metrics_csv(metrics_path)


@dataclass(frozen=True)
class _Progress:
    """How far an imported run got, from its files."""

    status: str  # done (every epoch, and oof.csv) or interrupted
    epochs_done: int
    best_f1: float | None
    best_epoch: int | None


def _progress(folder: Path, options: dict[str, Any], rows: list[dict[str, Any]]) -> _Progress:
    """The run's epochs done, best epoch and F1 (full precision from ``thresholds.json`` where
    it is that epoch's: ``metrics.csv`` rounds to 6 digits), and its status."""
    from hpatool.engine.runs.oof import OOF_FILE

    epochs = int(options.get("epochs") or 0)
    epochs_done = max((int(r["epoch"]) for r in rows if not r.get("partial")), default=0)
    best = best_row(rows)
    best_f1 = None if best is None else best["macro_f1"]
    if best is not None:
        try:
            doc = json.loads((folder / THRESHOLDS_FILE).read_text(encoding="utf-8"))
            if doc.get("epoch") == best["epoch"] and isinstance(doc.get("macro_f1"), float):
                best_f1 = doc["macro_f1"]
        except (OSError, ValueError, AttributeError):
            pass
    finished = epochs_done >= epochs > 0 and (folder / OOF_FILE).is_file()
    return _Progress(
        status=RunStatus.DONE if finished else RunStatus.INTERRUPTED,
        epochs_done=epochs_done,
        best_f1=best_f1,
        best_epoch=None if best is None else best["epoch"],
    )


def _other_split(
    reg: Registry,
    folder: Path,
    config: dict[str, Any],
    dataset: str,
    fold: int | None,
    split: dict[str, Any],
) -> bool:
    """Whether the run in ``folder`` validated on something else than fold ``fold`` of the
    registry's split of ``dataset``: its ``oof.csv`` ids (its validation fold) are not all in
    that fold, or, without one, its recorded split has other ``--folds`` or ``--seed`` (the
    same split made again in another registry, from the same samples, has the same folds)."""
    from hpatool.engine.runs.oof import OOF_FILE, read_oof

    oof = folder / OOF_FILE
    if fold is not None and oof.is_file():
        ids, _ = read_oof(oof)
        folds = reg.folds(dataset)
        return any(folds.get(i) != fold for i in ids)
    saved = config.get("split")
    if not isinstance(saved, dict):
        return False
    return (saved.get("folds"), saved.get("seed")) != (split.get("folds"), split.get("seed"))
