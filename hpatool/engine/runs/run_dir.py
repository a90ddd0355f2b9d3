"""A training run's folder: its file names and the writers of its text files and figure.

``OUT/NAME/`` holds ``config.json`` (the resolved configuration), ``metrics.csv`` (one row per
epoch), ``checkpoint-last.pt`` and ``checkpoint-best.pt`` (written by ``engine.models.checkpoint``),
``thresholds.json`` (the per-class thresholds ``predict --threshold auto`` uses), ``curves.png``,
with ``--keep-checkpoints K`` the weights of the last K epochs (``checkpoint-epoch-NNN.pt``:
the model, its spec and configuration, no optimizer state; what ``runs average`` averages)
and, once the run has ended, ``oof.csv`` (the best checkpoint's probabilities on the validation
fold, ``engine.runs.oof``). Training writes them, ``predict``/``evaluate``, ``runs show`` and ``runs
compare`` read them. Every file is written atomically.

``thresholds.json``: ``thresholds`` (28 floats), ``view`` (``{crop, crops, agg, tta}``: how the
probabilities they were tuned on were made), ``tuned_on`` (``"validation"``: the best epoch's
validation predictions with the ``--val-view``, written after each new best epoch; ``"oof"``:
``oof.csv``, written at the end of the run), ``validation_thresholds`` (the best epoch's
validation ones), ``macro_f1`` (the best epoch's held-out figure: ``metrics.split_half``),
``macro_f1_in_sample`` and ``macro_f1_at_0.5``, ``oof_macro_f1`` (with ``tuned_on`` ``"oof"``:
macro F1 of ``oof.csv`` at ``thresholds``, in sample) and ``oof_macro_f1_heldout`` (split-half
held out), ``epoch``, ``checkpoint``, ``class_names``. Old runs' files have no ``view`` nor
``tuned_on``: validation, centre crop.

``metrics.csv``: ``macro_f1`` is each epoch's held-out figure (what picks the best epoch),
``macro_f1_in_sample`` the same predictions scored with thresholds tuned on them; ``seconds``
the epoch's training time, ``val_seconds`` its validation's (``--val-view``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpatool._io import write_csv, write_text_atomic
from hpatool.engine.views import View
from hpatool.errors import DataError
from hpatool.labels import CLASS_NAMES
from hpatool.run_plots import plot_curves

LAST = "checkpoint-last.pt"
OOF_FILE = "oof.csv"  # the out-of-fold predictions (``engine.runs.oof``)
TENSORBOARD_DIR = "tensorboard"  # --tensorboard's event files (``engine.training.tensorboard``)
BEST = "checkpoint-best.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
THRESHOLDS_FILE = "thresholds.json"
CURVES_FILE = "curves.png"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LAST, BEST, THRESHOLDS_FILE, CURVES_FILE, OOF_FILE)
#: ``--keep-checkpoints``: one epoch's weights (``checkpoint-epoch-007.pt``)
EPOCH_CHECKPOINT = "checkpoint-epoch-{:03d}.pt"
_EPOCH_PATTERN = re.compile(r"checkpoint-epoch-(\d{3,})\.pt")
#: What an epoch's checkpoint keeps of a full one: enough to score and average it.
EPOCH_CHECKPOINT_KEYS = (
    "arch", "timm_name", "model", "ema", "epoch", "step", "steps_per_epoch", "config",
    "model_spec", "metrics",
)  # fmt: skip

#: The columns of ``metrics.csv``, in order.
METRIC_COLUMNS = (
    "epoch", "step", "partial", "train_loss", "val_loss", "macro_f1", "macro_f1_in_sample",
    "macro_f1_at_0.5", "lr", "images_per_s", "seconds", "val_seconds",
)  # fmt: skip


def is_epoch_checkpoint(name: str) -> bool:
    """Whether a file name is that of a kept epoch checkpoint (``checkpoint-epoch-NNN.pt``)."""
    return _EPOCH_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class RunDir:
    """The folder of one run and the paths of its files."""

    path: Path

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def thresholds(self) -> Path:
        return self.path / THRESHOLDS_FILE

    @property
    def curves(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def oof(self) -> Path:
        return self.path / OOF_FILE

    def epoch_checkpoints(self) -> list[tuple[int, Path]]:
        """The kept epoch checkpoints (``--keep-checkpoints``) as ``(epoch, path)``, oldest
        first."""
        found = []
        for path in self.path.glob("checkpoint-epoch-*.pt"):
            match = _EPOCH_PATTERN.fullmatch(path.name)
            if match is not None and path.is_file() and not path.is_symlink():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def keep_epoch_checkpoint(self, checkpoint: dict[str, Any], epoch: int, keep: int) -> None:
        """Save epoch ``epoch``'s weights (``EPOCH_CHECKPOINT_KEYS`` of ``checkpoint``), then
        delete all but the newest ``keep`` epoch checkpoints."""
        from hpatool.engine.models.checkpoint import save_checkpoint

        slim = {k: checkpoint[k] for k in EPOCH_CHECKPOINT_KEYS if k in checkpoint}
        save_checkpoint(self.path / EPOCH_CHECKPOINT.format(epoch), slim)
        kept = self.epoch_checkpoints()
        for _, path in kept[: max(0, len(kept) - keep)]:
            path.unlink(missing_ok=True)

    def files(self) -> dict[str, Path]:
        """The run files that exist, by name, in ``RUN_FILES`` order."""
        return {name: self.path / name for name in RUN_FILES if (self.path / name).exists()}

    def write_config(self, resolved: dict[str, Any]) -> None:
        """``config.json``: the run's resolved configuration."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config, json.dumps(resolved, indent=2) + "\n")

    def write_history(self, history: Sequence[dict[str, Any]]) -> None:
        """``metrics.csv`` and ``curves.png`` from the metrics rows of the epochs so far."""
        write_metrics_csv(self.metrics, history)
        plot_curves(history, self.curves, best_row(history))

    def write_thresholds(
        self,
        thresholds: Sequence[float],
        metrics: dict[str, Any],
        epoch: int,
        view: dict[str, Any] | None = None,
    ) -> None:
        write_thresholds(self.thresholds, thresholds, metrics, epoch, view)

    def write_oof_thresholds(
        self,
        thresholds: Sequence[float],
        view: dict[str, Any],
        oof_macro_f1: float,
        oof_macro_f1_heldout: float | None = None,
    ) -> None:
        """``thresholds.json`` tuned on ``oof.csv``: the best epoch's file with ``thresholds``
        replaced (its centre-crop ones kept as ``validation_thresholds``)."""
        try:
            doc = json.loads(self.thresholds.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or "thresholds" not in doc:
                raise ValueError("no thresholds key")
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{self.thresholds}: cannot read the best epoch's thresholds ({exc}); "
                "train the run again"
            ) from None
        doc["validation_thresholds"] = doc.get("validation_thresholds", doc["thresholds"])
        doc.update(
            thresholds=[float(t) for t in thresholds],
            view=dict(view),
            tuned_on="oof",
            oof_macro_f1=float(oof_macro_f1),
            oof_macro_f1_heldout=_finite_or_none(oof_macro_f1_heldout),
        )
        write_text_atomic(self.thresholds, json.dumps(doc, indent=2) + "\n")


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One line per row, the ``METRIC_COLUMNS`` only; floats with 6 significant digits."""

    def cell(value: Any) -> Any:
        return f"{value:.6g}" if isinstance(value, float) else value

    write_csv(
        path, METRIC_COLUMNS, ([cell(row.get(c, "")) for c in METRIC_COLUMNS] for row in rows)
    )


#: The integer columns of ``metrics.csv``; the others are floats.
_INT_COLUMNS = ("epoch", "step", "partial")


def read_metrics_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.csv``, typed as training wrote them (an empty cell is
    ``None``); a file that is not one is a one-line ``DataError`` naming the row."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("epoch", "macro_f1") if c not in (reader.fieldnames or ())]
            if missing:
                raise DataError(f"{path}: not a metrics.csv (no {', '.join(missing)} column)")
            return [_metrics_row(path, n, raw) for n, raw in enumerate(reader, start=2)]
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a metrics.csv ({exc})") from None


def _metrics_row(path: Path, line: int, raw: dict[str, str | None]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in METRIC_COLUMNS:
        text = (raw.get(key) or "").strip()
        try:
            row[key] = None if not text else int(text) if key in _INT_COLUMNS else float(text)
        except ValueError:
            raise DataError(f"{path}, line {line}: {key} {text!r} is not a number") from None
    if row["epoch"] is None:
        raise DataError(f"{path}, line {line}: no epoch")
    return row


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best epoch's row: the highest ``macro_f1`` (held out; in older runs' files tuned on
    validation), the first of equals, as training picks it; ``None`` when no row has one."""
    best: dict[str, Any] | None = None
    for row in rows:
        f1 = row.get("macro_f1")
        if f1 is None or f1 != f1:  # missing or NaN
            continue
        if best is None or float(f1) > float(best["macro_f1"]):
            best = row
    return best


def write_thresholds(
    path: Path,
    thresholds: Sequence[float],
    metrics: dict[str, Any],
    epoch: int,
    view: dict[str, Any] | None = None,
) -> None:
    """``thresholds.json``: the per-class thresholds tuned at ``epoch`` on the validation
    predictions (the centre crop: ``view``) and its macro F1s."""
    doc: dict[str, Any] = {
        "thresholds": [float(t) for t in thresholds],
        **({"view": dict(view)} if view is not None else {}),
        "tuned_on": "validation",
        "validation_thresholds": [float(t) for t in thresholds],
        "macro_f1": float(metrics["macro_f1"]),
        **(
            {"macro_f1_in_sample": float(metrics["macro_f1_in_sample"])}
            if "macro_f1_in_sample" in metrics
            else {}
        ),
        "macro_f1_at_0.5": float(metrics["macro_f1_at_0.5"]),
        "epoch": int(epoch),
        "checkpoint": BEST,
        "class_names": list(CLASS_NAMES),
    }
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)


def run_view(out_dir: Path) -> View | None:
    """The view a run's ``oof.csv`` (and its stored thresholds) were made with: the ``view`` of
    its ``thresholds.json``, else rebuilt from its ``config.json`` options; ``None`` if neither
    says."""
    from hpatool.engine.views import LEGACY_VIEW

    try:
        doc = json.loads((out_dir / THRESHOLDS_FILE).read_text(encoding="utf-8"))
        view = View.from_json(doc.get("view")) if isinstance(doc, dict) else None
        if view is not None:
            return view
    except (OSError, ValueError):
        pass
    try:
        config = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        opts = config["options"]
        return View.from_json(
            {
                "crop": opts["crop"],
                "crops": opts.get("eval_crops", LEGACY_VIEW.crops),
                "agg": opts.get("eval_agg", LEGACY_VIEW.agg),
                "tta": opts.get("tta", LEGACY_VIEW.tta),
            }
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def is_event_file(path: Path) -> bool:
    """Whether ``path`` is a file ``SummaryWriter`` writes (``events.out.tfevents.*``)."""
    return path.is_file() and not path.is_symlink() and path.name.startswith("events.out.tfevents.")
