"""``EpochRun``, everything a run's epoch loop works with (``engine.training.epochs``), and
``OofResult``, what its out-of-fold step wrote (``engine.training.oof_step``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpatool.engine.distributed import DistContext
from hpatool.engine.training.build import TrainData, Trainer
from hpatool.engine.training.events import RunEvents
from hpatool.engine.training.resume import RunTarget
from hpatool.engine.training.state import TrainState
from hpatool.engine.views import View
from hpatool.registry import Registry


@dataclass
class EpochRun:
    """Everything the epoch loop works with."""

    target: RunTarget
    data: TrainData
    trainer: Trainer
    state: TrainState
    resolved: dict[str, Any]
    reg: Registry
    ctx: DistContext
    events: RunEvents
    oof: OofResult | None = None  # set by write_oof_step when it scored the validation fold


@dataclass
class OofResult:
    """What the out-of-fold step wrote: ``oof.csv``'s macro F1 with its tuned thresholds."""

    macro_f1: float  # in sample: thresholds tuned on the predictions it scores
    thresholds: list[float]
    view: View
    text: str  # the view in words, as it really happened
    samples: int
    heldout_macro_f1: float = float("nan")  # split-half held-out (metrics.split_half)
