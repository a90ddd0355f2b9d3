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


def validation_fold(
    reg: Registry, dataset: str, run: str | None, checkpoint: Path | None
) -> int | None:
    """The fold the model was validated on, when ``dataset`` is its first training dataset:
    from the registry for ``--run``, from the ``config.json`` beside a ``--checkpoint``."""
    datasets: list[str] = []
    fold: Any = None
    if run is not None:
        r = reg.run(run)
        datasets, fold = list(r.datasets), r.fold
    elif checkpoint is not None:
        try:
            config_text = (checkpoint.parent / CONFIG_FILE).read_text("utf-8")
            options = json.loads(config_text)["options"]
            datasets, fold = list(options["datasets"]), options["fold"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a checkpoint on its own: evaluate every labelled sample
    if datasets and datasets[0] == dataset and isinstance(fold, int):
        return fold
    return None
