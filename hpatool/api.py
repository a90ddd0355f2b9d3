"""hpatool's Python API, for notebooks and scripts: load a trained run, score arrays or a folder
of images, and read an experiment's out-of-fold table, without the command line.

Everything here calls the functions the commands call (``engine.scoring.model_source`` finds a run's
checkpoint and thresholds, ``engine.scoring.score`` cuts the views and runs the model,
``engine.runs.oof``
puts out-of-fold files together), so a probability from ``Model.predict_proba`` is the one
``hpatool predict --run RUN`` writes for the same image and seed (``docs/api.md``)::

    from hpatool import api

    model = api.load_run("r50-f0")                       # its best checkpoint, view, thresholds
    image = api.read_sample("data/train", "00070df0-bbc3-11e8-b2bc-ac1f6b6435d0")  # (4, H, W)
    probs = model.predict_proba(image)                   # (28,) with the run's view
    labels = model.predict(image)                        # class numbers, as predict decides
    table = api.score_folder(model, "data/test")         # a DataFrame: Id and 28 columns
    oof = api.oof_table("r50")                           # Id, fold, 28 probabilities, labels

The registry is ``home`` (default: ``$HPATOOL_HOME``, else the platform's user data folder), as
``--home`` is for the commands. Errors are hpatool's own (``hpatool.errors.HpaToolError``
subclasses) with the same one-line messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpatool.engine.views import View
from hpatool.imaging import read_sample

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from hpatool.engine.models.checkpoint import ModelSpec

__all__ = ["Model", "load_run", "oof_table", "read_sample", "score_folder"]


@dataclass
class Model:
    """A trained run, ready to score: its model (eval mode, on ``device``), how it reads
    images (``spec``: crop, normalisation, classes), the view its thresholds were tuned on, and
    the per-class thresholds ``predict --threshold auto`` applies."""

    name: str
    module: nn.Module
    spec: ModelSpec
    view: View
    thresholds: np.ndarray  # (28,)
    device: torch.device
    amp_dtype: Any = None  # the dtype the run trained in, on this device (float32 on the CPU)

    def predict_proba(
        self, images: np.ndarray | Sequence[np.ndarray], *, seed: int = 0
    ) -> np.ndarray:
        """Probabilities of one ``(4, H, W)`` uint8 image (R, G, B, Y) -> ``(28,)``, or of
        several (a ``(N, 4, H, W)`` array or a list) -> ``(N, 28)``: each image cut into the
        run's view and aggregated as ``predict`` does (random crops, if the view has them,
        come from ``seed`` and the image's position in the list)."""
        import torch

        from hpatool.engine.scoring.score import _forward, aggregate, cut_views

        one = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if one else list(images)
        out = []
        with torch.inference_mode():
            for i, img in enumerate(batch):
                arr = _checked_image(img, self.view.crop, i)
                stack = torch.from_numpy(cut_views(arr, self.view, i, seed))
                (probs,) = _forward(
                    self.module, [stack], self.device, self.amp_dtype, self.spec.mean, self.spec.std
                )
                out.append(aggregate(probs, self.view.agg))
        result = np.stack(out) if out else np.zeros((0, len(self.thresholds)))
        return result[0] if one else result

    def predict(
        self, images: np.ndarray | Sequence[np.ndarray], *, min_labels: int = 1, seed: int = 0
    ) -> list[int] | list[list[int]]:
        """The classes of one image (or of each image), as ``predict`` decides them: at or
        above the run's thresholds, topped up to ``min_labels`` with the most probable."""
        from hpatool.engine.scoring.score import decide_labels

        probs = self.predict_proba(images, seed=seed)
        if probs.ndim == 1:
            return decide_labels(probs, self.thresholds, min_labels)
        return [decide_labels(p, self.thresholds, min_labels) for p in probs]


def _checked_image(img: Any, crop: int, position: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[0] != 4 or arr.dtype != np.uint8:
        raise ValueError(
            f"image {position}: expected a (4, H, W) uint8 array (R, G, B, Y), got "
            f"{arr.dtype} {tuple(arr.shape)}"
        )
    if min(arr.shape[1:]) < crop:
        raise ValueError(
            f"image {position} is {arr.shape[2]}x{arr.shape[1]}, smaller than the {crop} crop"
        )
    return arr


def load_run(
    run: str,
    *,
    home: str | Path | None = None,
    device: str = "cpu",
    threshold: str | float = "auto",
) -> Model:
    """Run ``run`` of the registry at ``home``: its best checkpoint (else its last), its
    stored view and its thresholds (``threshold``: ``auto``, a number, or a CSV of per-class
    thresholds, as ``predict --threshold``)."""
    from hpatool.engine.config import PredictConfig
    from hpatool.engine.distributed import DistContext, resolve_device
    from hpatool.engine.models import checkpoint as ckpt_mod
    from hpatool.engine.scoring.model_source import (
        resolve_source,
        resolve_thresholds,
        with_threshold_file,
    )
    from hpatool.engine.scoring.score import scoring_dtype
    from hpatool.engine.views import resolve_view
    from hpatool.registry import Registry

    with Registry.open(home) as reg:
        source = resolve_source(reg, run, None)
    checkpoint = ckpt_mod.load_checkpoint(source.checkpoint)
    PredictConfig(dataset="-", run=[run], threshold=str(threshold)).validate()
    thresholds = with_threshold_file(threshold, resolve_thresholds(threshold, source, checkpoint))
    dev = resolve_device(device, DistContext())
    module, spec = ckpt_mod.build_model_from_checkpoint(checkpoint, dev, source.checkpoint)
    view = resolve_view(spec.crop, None, None, None, source.stored_view())
    amp = scoring_dtype(ckpt_mod.trained_amp(checkpoint), dev)
    return Model(run, module, spec, view, thresholds, dev, amp)


def score_folder(
    model: Model,
    folder: str | Path,
    ids: Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    workers: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Score the samples of ``folder`` (``<Id>_<colour>.png``; ``ids``: these ones, default
    every complete sample found) with ``model``'s view: a DataFrame with ``Id`` and the 28
    class probabilities (columns ``0``..``27``), in ``ids``' order (else sorted). The same
    scoring loop as ``predict`` (``engine.scoring.score.score``); an unreadable image is an
    error."""
    import pandas as pd

    from hpatool.engine.scoring.score import ScoreItem, score
    from hpatool.ids import COLOURS

    root = Path(folder).expanduser()
    if ids is None:
        found: dict[str, set[str]] = {}
        for path in root.glob("*_*.png"):
            sid, _, colour = path.stem.rpartition("_")
            found.setdefault(sid, set()).add(colour)
        ids = sorted(s for s, colours in found.items() if set(COLOURS) <= colours)
    items = [ScoreItem(i, root, sid) for i, sid in enumerate(ids)]
    scores = score(
        model.module,
        items,
        model.view,
        mean=model.spec.mean,
        std=model.spec.std,
        batch_size=batch_size,
        workers=workers,
        device=model.device,
        seed=seed,
        strict=True,
        amp_dtype=model.amp_dtype,
        model_name=f"run {model.name}",
    )
    rows = np.stack([scores.probs[i] for i in range(len(items))]) if items else np.zeros((0, 28))
    frame = pd.DataFrame(rows, columns=[str(c) for c in range(rows.shape[1])])
    frame.insert(0, "Id", list(ids))
    return frame


def oof_table(experiment: str, *, home: str | Path | None = None) -> pd.DataFrame:
    """Experiment ``experiment``'s out-of-fold predictions, as ``experiments show`` puts them
    together (``engine.runs.oof.summarize_oof``): ``Id``, ``fold`` (the run that predicted it did
    not train on it), the 28 probabilities (``0``..``27``) and ``Target`` (the labels, space
    separated), in dataset order."""
    import pandas as pd

    from hpatool.engine.runs.oof import summarize_oof
    from hpatool.labels import format_target
    from hpatool.registry import Registry

    with Registry.open(home) as reg:
        summary = summarize_oof(reg, reg.experiment_runs(experiment))
    frame = pd.DataFrame(summary.probs, columns=[str(c) for c in range(summary.probs.shape[1])])
    frame.insert(0, "Id", summary.ids)
    frame.insert(1, "fold", summary.folds if summary.folds is not None else -1)
    frame["Target"] = [format_target(np.flatnonzero(y).tolist()) for y in summary.y_true]
    return frame
