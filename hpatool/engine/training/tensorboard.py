"""``train --tensorboard``: the run's scalars for TensorBoard, in ``OUT/NAME/tensorboard``.

Per epoch (x = the optimizer step at its end): ``train/loss``, ``val/loss``,
``val/macro_f1_heldout`` (what picks the best epoch), ``val/macro_f1_tuned`` (in sample),
``val/macro_f1_at_0.5``, ``lr``, ``images_per_s``; every
``STEP_EVERY`` optimizer steps (or the next step reported after them):
``train/loss_running`` (the epoch's running mean) and ``train/images_per_s``. A resumed run
appends to the same folder, and TensorBoard shows one line per tag (step numbers go on from
where the run stopped).

The ``tensorboard`` package is an optional extra (``pip install 'hpatool[tensorboard]'``);
without it ``--tensorboard`` is refused before the run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpatool.engine.runs.run_dir import TENSORBOARD_DIR
from hpatool.engine.training.events import ProgressCallback, TrainEvent
from hpatool.errors import UsageError

#: Folder of the event files, inside the run folder.
#: Step scalars are written every this many optimizer steps.
STEP_EVERY = 10
#: metrics.csv column -> TensorBoard tag, per epoch.
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "macro_f1": "val/macro_f1_heldout",
    "macro_f1_in_sample": "val/macro_f1_tuned",
    "macro_f1_at_0.5": "val/macro_f1_at_0.5",
    "lr": "lr",
    "images_per_s": "images_per_s",
}


def check_available() -> None:
    """Refuse ``--tensorboard`` when the ``tensorboard`` package is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install 'hpatool[tensorboard]' "
            "(or pip install tensorboard), or leave out --tensorboard"
        )


class ScalarLog:
    """Writes a run's scalars with ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, run_dir: Path) -> None:
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.path))
        self.last_step: int | None = None

    def step(self, step: int, loss: float, images_per_s: float) -> None:
        if self.last_step is None or step - self.last_step >= STEP_EVERY:
            self.last_step = step
            self.writer.add_scalar("train/loss_running", loss, step)
            if images_per_s:
                self.writer.add_scalar("train/images_per_s", images_per_s, step)

    def epoch(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for column, tag in EPOCH_TAGS.items():
            value = row.get(column)
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def with_scalars(
    progress: ProgressCallback | None, scalars: ScalarLog | None
) -> ProgressCallback | None:
    """``progress``, also writing the ``step`` and ``epoch`` events' scalars to ``scalars``."""
    if scalars is None:
        return progress

    def both(event: TrainEvent) -> None:
        if event.kind == "step" and event.loss is not None:
            scalars.step(event.step, event.loss, event.images_per_s or 0.0)
        elif event.kind == "epoch" and event.metrics is not None:
            scalars.epoch(event.metrics)
        if progress is not None:
            progress(event)

    return both
