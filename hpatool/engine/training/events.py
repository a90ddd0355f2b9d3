"""How training reports progress: ``TrainEvent``s sent to an optional callback (the CLI draws them
as a progress bar and one line per epoch). The engine never prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

#: What a ``TrainEvent`` reports.
EventKind = Literal["start", "step", "validate", "epoch", "oof"]


class EventInfo(TypedDict, total=False):
    """``TrainEvent.info``: the ``start`` event's facts of the run, the ``oof`` event's view."""

    train_samples: int
    val_samples: int
    left_out: list[str]  # one line per dataset with samples left out
    unsplit: int  # samples of the first dataset without a fold
    duplicates_removed: int
    dedup_hint: list[str]  # the datasets 'hpatool dedup' has not hashed
    device: str
    world_size: int
    resumed: bool
    cache: list[str]  # datasets read from their decoded cache
    ema: float  # --ema (0: off)
    view: str  # "oof": the run's view in words


@dataclass
class TrainEvent:
    """What the callback gets: ``kind`` is ``start``, ``step``, ``validate``, ``epoch`` or
    ``oof`` (the end of the run: the best checkpoint scoring the validation fold with the run's
    view, ``val_done`` of ``val_total`` images of this process; ``info["view"]`` says how, in
    words)."""

    kind: EventKind
    name: str
    run_dir: Path
    epoch: int  # 1-based epoch being trained (or just finished, for "epoch")
    epochs: int
    step: int  # optimizer steps done in total
    total_steps: int  # the step budget of this invocation (epochs or --max-steps)
    step_in_epoch: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None  # running mean training loss of the epoch
    images_per_s: float | None = None
    metrics: dict[str, Any] | None = None
    val_done: int = 0  # "validate", "oof": validation samples scored so far (this process)
    val_total: int = 0  # "validate", "oof": validation samples of this process
    best: bool = False
    info: EventInfo = field(default_factory=lambda: EventInfo())


ProgressCallback = Callable[[TrainEvent], None]
StepCallback = Callable[[int, float, float], None]


@dataclass
class RunEvents:
    """Sends the ``TrainEvent``s of one run to ``progress`` (``None``: sends nothing, as on the
    ranks other than 0)."""

    progress: ProgressCallback | None
    name: str
    run_dir: Path
    epochs: int
    total_steps: int  # the step budget: all epochs' steps, or --max-steps if fewer
    steps_per_epoch: int

    def __call__(self, kind: EventKind, epoch: int, step: int, **kw: Any) -> None:
        if self.progress is not None:
            self.progress(
                TrainEvent(
                    kind,
                    self.name,
                    self.run_dir,
                    epoch,
                    self.epochs,
                    step,
                    self.total_steps,
                    steps_per_epoch=self.steps_per_epoch,
                    **kw,
                )
            )

    def step_callback(self, epoch: int, base_step: int, base_in_epoch: int) -> StepCallback | None:
        """``on_step`` of ``train_one_epoch`` in (0-based) ``epoch`` whose first step is
        ``base_step + 1`` (``base_in_epoch + 1`` in the epoch); ``None`` if nobody listens."""
        if self.progress is None:
            return None

        def on_step(done: int, loss: float, images_per_s: float) -> None:
            self(
                "step",
                epoch + 1,
                base_step + done,
                step_in_epoch=base_in_epoch + done,
                loss=loss,
                images_per_s=images_per_s,
            )

        return on_step
