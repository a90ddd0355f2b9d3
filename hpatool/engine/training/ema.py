"""``train --ema DECAY``: an exponential moving average of the weights, BatchNorm buffers included.

After every optimizer step each floating-point tensor of the model's state (parameters, and the
running means and variances of BatchNorm) moves the average toward it:
``ema = d * ema + (1 - d) * value`` with ``d = min(DECAY, (1 + n) / (10 + n))`` after ``n``
updates (the warm-up of TensorFlow's ``ExponentialMovingAverage``: early averages are not held
at the random initial weights; a short run still ends near its last weights). Integer buffers
(BatchNorm's batch counter) are copied. With ``--ema`` the average is what is validated each
epoch, what picks the best epoch, and what ``checkpoint-*.pt`` stores under ``"model"`` (so
``predict``, ``evaluate`` and the out-of-fold step use it without knowing); the raw weights
go beside it under ``"raw_model"`` with the update count under ``"ema"``, and ``--resume``
continues both exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    """The moving average of ``source``'s state: ``module`` is a copy of it (in eval mode,
    without gradients) updated in place by ``update()``."""

    def __init__(self, source: nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), not {decay}")
        self.source = source
        self.decay = float(decay)
        self.updates = int(updates)
        self.module = copy.deepcopy(source).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay of update number ``updates`` (1-based): the warm-up, then ``decay``."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average toward the source's current state."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        averaged: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        source = self.source.state_dict()
        for key, ema in self.module.state_dict().items():
            value = source[key]
            if ema.is_floating_point():
                group = averaged.setdefault(ema.dtype, ([], []))
                group[0].append(ema)
                group[1].append(value.detach())
            else:
                ema.copy_(value)
        for ema_list, value_list in averaged.values():
            torch._foreach_lerp_(ema_list, value_list, weight)

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of the average besides its weights."""
        return {"decay": self.decay, "updates": self.updates}

    def load(self, weights: dict[str, Any], state: dict[str, Any]) -> None:
        """Set the average's weights and update count from a checkpoint."""
        self.module.load_state_dict(weights)
        self.updates = int(state.get("updates", 0))
