"""The training state and its checkpoint, in one place: what ``checkpoint-*.pt`` holds, how it is
written (``TrainState.to_checkpoint``) and how it is read back (``TrainState.restore``). Adding a
piece of state (an EMA of the weights, say) means adding it to ``TrainObjects`` or ``TrainState``
and to both methods here.

The keys of a checkpoint (besides ``format`` and ``version``, see ``engine.models.checkpoint``):

==================  ==============================================================================
``arch``            the ``--arch`` given (``resnet50``); ``timm_name``: the timm model built
``model``           the model's state dict (never DDP-wrapped); with ``--ema``, the moving average's
                    (what is validated and scored), the raw weights under ``raw_model`` and the
                    average's update count under ``ema`` (``engine.training.ema``)
``optimizer``       AdamW state dict; ``scheduler``: LambdaLR state; ``scaler``: GradScaler state
``epoch``           epochs completed; ``step``: optimizer steps done
``step_in_epoch``   steps done in epoch ``epoch`` (> 0 only if stopped by ``--max-steps`` or saved
                    by ``--checkpoint-every`` in the middle of an epoch; ``epoch_loss_sum`` then
                    holds that epoch's loss sum so far)
``steps_per_epoch`` optimizer steps in a whole epoch
``rng``             torch / numpy / python (and CUDA) RNG states
``sampler``         the training sampler's state (seed, epoch, draw size, world size)
``config``          the resolved run configuration (a plain dict, as in ``config.json``)
``model_spec``      what prediction needs to rebuild the model and its inputs (``ModelSpec``)
``best_f1``         best tuned macro F1 so far; ``best_epoch``: its epoch
``thresholds``      per-class thresholds tuned on this epoch's validation predictions (``None``
                    in a checkpoint saved in the middle of an epoch: not validated)
``metrics``         this epoch's metrics row (``None`` in the middle of an epoch); ``history``:
                    the rows of all epochs so far
==================  ==============================================================================
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hpatool.data.sampling import WeightedEpochSampler
from hpatool.engine.models.checkpoint import capture_rng_state, restore_rng_state
from hpatool.engine.training.ema import ModelEma
from hpatool.errors import UsageError


@dataclass
class TrainObjects:
    """The objects whose state a checkpoint holds; ``model`` is the bare model, not DDP's."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: WeightedEpochSampler
    ema: ModelEma | None = None  # --ema: the moving average of the model's weights

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated and checkpointed as ``"model"``: the moving average
        with ``--ema``, else the model itself."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class TrainState:
    """Where a run is: the counters, the best epoch and the metrics of every epoch."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    step_in_epoch: int = 0  # steps done in epoch ``epoch`` when it was stopped in its middle
    epoch_loss_sum: float = 0.0  # that partial epoch's loss sum
    best_f1: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def finish_epoch(self, epoch: int, steps: int, loss_sum: float, steps_per_epoch: int) -> bool:
        """Count ``steps`` more steps of (0-based) ``epoch``, whose loss sum is now ``loss_sum``;
        ``True`` if the epoch is complete, ``False`` if it stopped in its middle."""
        self.step += steps
        done = self.step_in_epoch + steps
        if done < steps_per_epoch:
            self.epoch, self.step_in_epoch, self.epoch_loss_sum = epoch, done, loss_sum
            return False
        self.epoch, self.step_in_epoch, self.epoch_loss_sum = epoch + 1, 0, 0.0
        return True

    def record(self, row: dict[str, Any]) -> bool:
        """Add (or replace) the metrics row of ``row["epoch"]``; ``True`` if it is a new best."""
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        if self.best_f1 is None or row["macro_f1"] > self.best_f1:
            self.best_f1, self.best_epoch = float(row["macro_f1"]), int(row["epoch"])
            return True
        return False

    def to_checkpoint(
        self,
        objects: TrainObjects,
        config: dict[str, Any],
        *,
        thresholds: Sequence[float] | None,
        metrics: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The checkpoint of this state; ``config`` is the run's resolved configuration.
        ``thresholds`` and ``metrics`` are ``None`` in the middle of an epoch (not validated)."""
        return {
            "arch": config["options"]["arch"],
            "timm_name": config["timm_name"],
            "model": objects.eval_model.state_dict(),
            **(
                {"raw_model": objects.model.state_dict(), "ema": objects.ema.state()}
                if objects.ema is not None
                else {}
            ),
            "optimizer": objects.optimizer.state_dict(),
            "scheduler": objects.scheduler.state_dict(),
            "scaler": objects.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "epoch_loss_sum": self.epoch_loss_sum,
            "steps_per_epoch": config["steps_per_epoch"],
            "rng": capture_rng_state(),
            "sampler": objects.sampler.state_dict(),
            "config": config,
            "model_spec": copy.deepcopy(config["model_spec"]),
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "thresholds": None if thresholds is None else [float(t) for t in thresholds],
            "metrics": metrics,
            "history": self.history,
        }

    @classmethod
    def restore(
        cls,
        checkpoint: dict[str, Any],
        objects: TrainObjects,
        *,
        name: str,
        arch: str,
        world_size: int,
    ) -> TrainState:
        """Load ``checkpoint`` into ``objects`` and the global RNGs; the state it was saved in."""
        try:
            if objects.ema is not None:
                if "raw_model" not in checkpoint:
                    raise UsageError(
                        f"checkpoint of run {name!r} has no moving average of the weights: the "
                        "run trained without --ema; resume it without --ema"
                    )
                objects.model.load_state_dict(checkpoint["raw_model"])
                objects.ema.load(checkpoint["model"], checkpoint.get("ema") or {})
            else:
                objects.model.load_state_dict(checkpoint.get("raw_model", checkpoint["model"]))
        except RuntimeError as exc:
            raise UsageError(
                f"checkpoint of run {name!r} does not fit --arch {arch}: "
                f"{' '.join(str(exc).split())[:160]}"
            ) from None
        objects.optimizer.load_state_dict(checkpoint["optimizer"])
        objects.scheduler.load_state_dict(checkpoint["scheduler"])  # keeps this run's lr lambda
        if checkpoint.get("scaler"):
            objects.scaler.load_state_dict(checkpoint["scaler"])
        step_in_epoch = int(checkpoint.get("step_in_epoch", 0))
        if step_in_epoch and checkpoint["sampler"].get("world_size") != world_size:
            raise UsageError(
                f"run {name!r} stopped in the middle of an epoch with "
                f"{checkpoint['sampler'].get('world_size')} processes; resume it with as many"
            )
        restore_rng_state(checkpoint["rng"])
        return cls(
            epoch=int(checkpoint["epoch"]),
            step=int(checkpoint["step"]),
            step_in_epoch=step_in_epoch,
            epoch_loss_sum=float(checkpoint.get("epoch_loss_sum", 0.0)) if step_in_epoch else 0.0,
            best_f1=checkpoint.get("best_f1"),
            best_epoch=checkpoint.get("best_epoch"),
            history=list(checkpoint.get("history", [])),
        )
