"""Where a scoring model comes from: ``--run RUN`` (its best checkpoint, else its last) or
``--checkpoint PATH``; the per-class thresholds that go with it; and the fold it was validated
on (what ``evaluate`` scores by default)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpatool.engine.config import parse_threshold
from hpatool.engine.run_dir import BEST, CONFIG_FILE, LAST, THRESHOLDS_FILE
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import NUM_CLASSES
from hpatool.registry import Registry


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a checkpoint file and, if known, its run and thresholds."""

    checkpoint: Path
    run: str | None
    thresholds_file: Path | None


def resolve_source(reg: Registry, run: str | None, checkpoint: Path | None) -> ModelSource:
    """``--run RUN`` (its best checkpoint, else its last) or ``--checkpoint PATH``, not both."""
    if (run is None) == (checkpoint is None):
        raise UsageError("give exactly one of --run RUN or --checkpoint PATH")
    if run is not None:
        record = reg.run(run)
        for name in (BEST, LAST):
            path = record.out_dir / name
            if path.is_file():
                thresholds = record.out_dir / THRESHOLDS_FILE
                return ModelSource(path, run, thresholds if thresholds.is_file() else None)
        raise NotFound(
            f"run {run!r} has no checkpoint in {record.out_dir} (looked for {BEST} and "
            f"{LAST}); train it first or pass --checkpoint PATH"
        )
    assert checkpoint is not None
    if not checkpoint.is_file():
        raise NotFound(f"{checkpoint}: no such checkpoint file")
    thresholds = checkpoint.parent / THRESHOLDS_FILE
    return ModelSource(checkpoint, None, thresholds if thresholds.is_file() else None)


def resolve_thresholds(
    threshold: str | float, source: ModelSource, ckpt: dict[str, Any]
) -> np.ndarray:
    """Per-class thresholds: ``auto`` = the run's tuned ones, or one float for every class."""
    value = parse_threshold(threshold)
    if value is not None:
        return np.full(NUM_CLASSES, value)
    # The checkpoint's own thresholds (tuned at the epoch it holds) come first: thresholds.json
    # belongs to the best epoch, so it would be wrong for checkpoint-last.pt of a later epoch.
    values: Any = ckpt.get("thresholds")
    origin = str(source.checkpoint)
    if values is None and source.thresholds_file is not None:
        origin = str(source.thresholds_file)
        try:
            doc = json.loads(source.thresholds_file.read_text(encoding="utf-8"))
            values = doc["thresholds"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{source.thresholds_file}: unreadable thresholds ({exc})") from None
    if values is None:
        raise UsageError(
            f"{source.checkpoint}: no tuned thresholds (none in the checkpoint, no "
            f"{THRESHOLDS_FILE} beside it); pass --threshold 0.5 or another number"
        )
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{origin}: thresholds are not numbers ({exc})") from None
    if arr.shape != (NUM_CLASSES,):
        raise DataError(f"{origin}: thresholds hold {arr.size} values, expected {NUM_CLASSES}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise DataError(
            f"{origin}: thresholds must lie in 0..1; pass --threshold 0.5 to use one number"
        )
    return arr


@dataclass(frozen=True)
class TrainingData:
    """What a model was trained on, as its run recorded it: ``--dataset``s, ``--fold`` (the
    validation fold of the first dataset) and ``--limit`` (the first N samples of each)."""

    run: str  # the run's name, or the checkpoint file when the run is not named
    datasets: tuple[str, ...]
    fold: int | None
    limit: int | None


def training_data(reg: Registry, run: str | None, checkpoint: Path | None) -> TrainingData | None:
    """The training data of ``--run`` (from the registry) or of a ``--checkpoint`` (from the
    ``config.json`` beside it); ``None`` for a checkpoint on its own."""
    options: Any = None
    name = run
    if run is not None:
        record = reg.run(run)
        saved = record.config.get("options") if isinstance(record.config, dict) else None
        limit = saved.get("limit") if isinstance(saved, dict) else None
        options = {"datasets": list(record.datasets), "fold": record.fold, "limit": limit}
    elif checkpoint is not None:
        try:
            options = json.loads((checkpoint.parent / CONFIG_FILE).read_text("utf-8"))["options"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        name = options.get("name") if isinstance(options, dict) else None
        name = name if isinstance(name, str) and name else str(checkpoint)
    if not isinstance(options, dict) or name is None:
        return None
    datasets, fold, limit = options.get("datasets"), options.get("fold"), options.get("limit")
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        return None
    return TrainingData(
        run=name,
        datasets=tuple(datasets),
        fold=fold if isinstance(fold, int) else None,
        limit=limit if isinstance(limit, int) and limit > 0 else None,
    )


def validation_fold(
    reg: Registry, dataset: str, run: str | None, checkpoint: Path | None
) -> int | None:
    """The fold the model was validated on, when ``dataset`` is its first training dataset:
    from the registry for ``--run``, from the ``config.json`` beside a ``--checkpoint``."""
    data = training_data(reg, run, checkpoint)
    if data is not None and data.datasets and data.datasets[0] == dataset:
        return data.fold
    return None


def training_ids(reg: Registry, data: TrainingData) -> set[str]:
    """The ids of the samples the run trained on, as ``hpatool.data.samples.train_val_items``
    chooses them: the labelled samples among the first ``limit`` of each dataset, except the
    validation fold of the first (and, in the others, the ids in it). Datasets removed since
    are skipped."""
    train: set[str] = set()
    val: set[str] = set()
    for k, name in enumerate(data.datasets):
        if not reg.has_dataset(name):
            continue
        samples = [s for s in reg.samples(name)[: data.limit] if s.target is not None]
        if k == 0 and data.fold is not None:
            folds = reg.folds(name)
            val = {s.id for s in samples if folds.get(s.id) == data.fold}
            train.update(s.id for s in samples if folds.get(s.id) is not None and s.id not in val)
        else:
            train.update(s.id for s in samples if s.id not in val)
    return train
