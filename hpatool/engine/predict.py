"""``hpatool predict`` and ``hpatool evaluate``: score a dataset with a trained model and write
a Kaggle submission (and probabilities), or report per-class precision, recall and F1.

Both score images the same way (``hpatool.engine.scoring``: crops, aggregation, thresholds,
``--min-labels``) with the model that ``hpatool.engine.model_source`` finds. Under ``torchrun``
each rank scores its share and rank 0 gathers the probabilities and writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine import checkpoint as ckpt_mod
from hpatool.engine.config import PredictConfig
from hpatool.engine.metrics import DEFAULT_THRESHOLD, ClassReport, macro_f1, per_class_report
from hpatool.engine.model_source import (
    ModelSource,
    resolve_source,
    resolve_thresholds,
    validation_fold,
)
from hpatool.engine.predict_files import (
    check_predict_outputs,
    failures_path_for,
    model_inputs,
    partial_path,
    write_failures,
    write_probabilities,
    write_submission,
)
from hpatool.engine.scoring import (
    ScoreItem,
    Scores,
    decide_labels,
    resolve_crop,
    score,
    windows_text,
)
from hpatool.errors import Interrupted, NotFound, UsageError, WorkFailed
from hpatool.labels import NUM_CLASSES
from hpatool.outputs import Inputs, check_figure
from hpatool.registry import Registry, Sample

# ------------------------------------------------------------------------------------ scoring


@dataclass
class _Scored:
    scores: Scores
    crop: int
    windows: int  # windows scored per image: ``crops``, or 1 if the crop is the image
    thresholds: np.ndarray
    source: ModelSource
    is_main: bool


def _score_dataset(
    reg: Registry,
    items: list[ScoreItem],
    config: PredictConfig,
    *,
    strict: bool,
    progress: ProgressFn | None,
) -> _Scored:
    """Load the model, score ``items`` (sharded under torchrun), gather on rank 0."""
    import torch

    from hpatool.engine.distributed import DistContext, resolve_device

    if not items:
        raise UsageError("no samples to score")
    checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
    source = resolve_source(reg, config.run, checkpoint)
    ctx = DistContext.from_env()
    dev = resolve_device(config.device, ctx)
    ctx.init(dev)
    try:
        ckpt = ckpt_mod.load_checkpoint(source.checkpoint)
        thresholds = resolve_thresholds(config.threshold, source, ckpt)
        model, spec = ckpt_mod.build_model_from_checkpoint(ckpt, device=dev)
        # channels_last is faster on CUDA and, through oneDNN, on the CPU too (resnet50 at 256:
        # 7.6-7.9 vs 6.4-6.6 crops/s on the 2-core development machine).
        model = model.to(memory_format=torch.channels_last)
        crop, whole_image = resolve_crop(config.crop_size, spec.crop, items, str(config.dataset))
        local = score(
            model,
            items,
            crop=crop,
            crops=config.crops,
            agg=config.agg,
            mean=spec.mean,
            std=spec.std,
            batch_size=config.batch_size,
            workers=config.workers,
            device=dev,
            seed=config.seed,
            strict=strict,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=progress if ctx.is_main else None,
        )
        merged = Scores()
        for part in ctx.gather(local):
            merged.update(part)
        windows = 1 if whole_image else config.crops
        return _Scored(merged, crop, windows, thresholds, source, ctx.is_main)
    finally:
        ctx.destroy()


def _score_or_stop(
    reg: Registry,
    items: list[ScoreItem],
    config: PredictConfig,
    *,
    strict: bool,
    progress: ProgressFn | None,
) -> _Scored:
    """``_score_dataset``, with SIGTERM stopping it as Ctrl-C does: one line, exit 143 (130)."""
    from hpatool.convert.pool import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return _score_dataset(reg, items, config, strict=strict, progress=progress)
    except (KeyboardInterrupt, Interrupted) as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        why = "terminated (SIGTERM)" if code == 143 else "interrupted"
        raise Interrupted(
            f"{why} while scoring: no file was written; run the command again", code
        ) from None


def _dataset_name(config: PredictConfig) -> str:
    config.validate()
    assert config.dataset is not None  # validate() says so
    return config.dataset


# ------------------------------------------------------------------------------------ predict


@dataclass
class PredictResult:
    dataset: str
    checkpoint: Path
    samples: int
    scored: int
    failures: dict[str, str]
    submission: Path | None
    probs: Path | None
    partial: Path | None
    crop: int
    crops: int
    agg: str
    label_counts: dict[int, int]
    is_main: bool = True
    windows: int = 0  # windows scored per image: ``crops``, or 1 if the crop is the image

    @property
    def scoring_text(self) -> str:  # ``max of 8 crops of 256px`` or ``1 window of 512px ...``
        return windows_text(self.agg, self.crops, self.crop, self.windows)


def predict(
    reg: Registry,
    config: PredictConfig,
    progress: ProgressFn | None = None,
    inputs: Inputs = (),
) -> PredictResult:
    """Score every sample of ``config.dataset`` and write a Kaggle submission to ``config.out``
    (and the probabilities to ``config.probs``).

    If some images cannot be read, the others are written to ``<out stem>.partial.csv`` (and
    ``<probs stem>.partial.csv``), ``out`` itself is not written, and ``WorkFailed`` is raised
    after the files are down; with ``config.strict`` the first bad image stops everything.
    Every file it may write is checked first (``hpatool.outputs``); ``inputs`` are the
    command's own input files (``--config``), never to be written over.
    """
    dataset = _dataset_name(config)
    out, probs_out = check_predict_outputs(reg, config, inputs)
    root = reg.dataset(dataset).image_root()
    items = [ScoreItem(i, root, s.id) for i, s in enumerate(reg.samples(dataset))]
    scored = _score_or_stop(reg, items, config, strict=config.strict, progress=progress)
    result = PredictResult(
        dataset=dataset,
        checkpoint=scored.source.checkpoint,
        samples=len(items),
        scored=len(scored.scores.probs),
        failures={items[i].id: err for i, err in sorted(scored.scores.failures.items())},
        submission=None,
        probs=None,
        partial=None,
        crop=scored.crop,
        crops=config.crops,
        agg=config.agg,
        label_counts={},
        is_main=scored.is_main,
        windows=scored.windows,
    )
    if scored.is_main:
        _write_predictions(result, items, scored, config.min_labels, out, probs_out)
    return result


def _write_predictions(
    result: PredictResult,
    items: list[ScoreItem],
    scored: _Scored,
    min_labels: int,
    out: Path,
    probs_out: Path | None,
) -> None:
    """Write the submission (``.partial`` if some images failed, with a failures file, then
    raise ``WorkFailed``) and the probabilities; fill in ``result``'s files and label counts."""
    ok = [t for t in items if t.index in scored.scores.probs]
    ids = [t.id for t in ok]
    probs = [scored.scores.probs[t.index] for t in ok]
    labels = [decide_labels(p, scored.thresholds, min_labels) for p in probs]
    counts: dict[int, int] = {}
    for lab in labels:
        for c in lab:
            counts[c] = counts.get(c, 0) + 1
    result.label_counts = dict(sorted(counts.items()))
    incomplete = bool(result.failures)
    sub_path = write_submission(partial_path(out) if incomplete else out, ids, labels)
    if probs_out is not None:
        result.probs = write_probabilities(
            partial_path(probs_out) if incomplete else probs_out, ids, probs
        )
    failures_path = failures_path_for(out)
    if incomplete:
        result.partial = sub_path
        write_failures(failures_path, result.failures)
        shown = list(result.failures.items())[:3]
        listed = "; ".join(f"{i}: {e}" for i, e in shown)
        more = f"; and {len(result.failures) - len(shown)} more" if len(result.failures) > 3 else ""
        raise WorkFailed(
            f"{len(result.failures)} of {len(items)} images could not be scored ({listed}{more}; "
            f"all listed in {failures_path}); the other {len(ids)} are in {sub_path}, and {out} "
            "was not written"
        )
    # A complete run: leftovers of an earlier incomplete one would only mislead.
    stale = [partial_path(out), failures_path]
    if probs_out is not None:
        stale.append(partial_path(probs_out))
    for path in stale:
        path.unlink(missing_ok=True)
    result.submission = sub_path


# ----------------------------------------------------------------------------------- evaluate


@dataclass
class EvaluationReport:
    """What ``hpatool evaluate`` reports: per-class scores and macro F1 on one dataset (fold)."""

    dataset: str
    fold: int | None
    samples: int
    crop: int
    crops: int
    agg: str
    threshold: str
    macro_f1: float
    macro_f1_at_05: float
    classes: list[ClassReport]
    checkpoint: Path
    is_main: bool = True
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    probs: np.ndarray | None = None
    plot: Path | None = None  # the per-class F1 chart, if one was asked for
    windows: int = 0  # windows scored per image: ``crops``, or 1 if the crop is the image

    @property
    def scoring_text(self) -> str:  # ``max of 8 crops of 256px`` or ``1 window of 512px ...``
        return windows_text(self.agg, self.crops, self.crop, self.windows)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fold": self.fold,
            "samples": self.samples,
            "checkpoint": str(self.checkpoint),
            "crop": self.crop,
            "crops": self.crops,
            "agg": self.agg,
            "threshold": self.threshold,
            "macro_f1": self.macro_f1,
            "macro_f1_at_0.5": self.macro_f1_at_05,
            "classes": [c.__dict__ for c in self.classes],
        }


def evaluate_run(
    reg: Registry,
    config: PredictConfig,
    progress: ProgressFn | None = None,
    inputs: Inputs = (),
) -> EvaluationReport:
    """Per-class precision, recall, F1 and support and macro F1 on the labelled samples of
    ``config.dataset`` (only fold ``config.fold`` if given; for the run's own validation dataset
    the run's fold is the default), scored as ``predict`` scores; with ``config.plot``, the
    per-class F1 as a bar chart too."""
    dataset = _dataset_name(config)
    plot = None
    if config.plot is not None:
        own = [*inputs, *model_inputs(reg, config)]
        plot = check_figure(config.plot, "--plot", reg, own)
    fold, labelled = _labelled_samples(reg, config)
    root = reg.dataset(dataset).image_root()
    items = [ScoreItem(i, root, s.id) for i, s in labelled]
    scored = _score_or_stop(reg, items, config, strict=True, progress=progress)
    from hpatool.labels import to_multihot

    y_true = to_multihot([s.target for _, s in labelled])
    probs = np.stack([scored.scores.probs[t.index] for t in items])
    y_pred = np.stack(
        [
            np.isin(np.arange(NUM_CLASSES), decide_labels(p, scored.thresholds, config.min_labels))
            for p in probs
        ]
    )
    classes = per_class_report(y_true, y_pred)
    report = EvaluationReport(
        dataset=dataset,
        fold=fold,
        samples=len(items),
        crop=scored.crop,
        crops=config.crops,
        agg=config.agg,
        threshold=str(config.threshold),
        macro_f1=float(np.mean([c.f1 for c in classes])),
        macro_f1_at_05=macro_f1(y_true, probs >= DEFAULT_THRESHOLD),
        classes=classes,
        checkpoint=scored.source.checkpoint,
        is_main=scored.is_main,
        y_true=y_true,
        y_pred=y_pred,
        probs=probs,
        windows=scored.windows,
    )
    if plot is not None and report.is_main:
        report.plot = plot_f1([report], plot)
    return report


def _labelled_samples(
    reg: Registry, config: PredictConfig
) -> tuple[int | None, list[tuple[int, Sample]]]:
    """The fold to evaluate (``config.fold``, else the model's validation fold when the
    dataset is its first, else none) and the labelled samples in it, by dataset position."""
    dataset = str(config.dataset)
    reg.dataset(dataset)  # an unknown name fails here, before anything else
    fold = config.fold
    if fold is None:
        checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
        fold = validation_fold(reg, dataset, config.run, checkpoint)
    samples = reg.samples(dataset)
    keep = {s.id for s in samples}
    if fold is not None:
        info = reg.split_info(dataset)
        if info is None:
            raise UsageError(
                f"dataset {dataset!r} has no folds; run 'hpatool split {dataset}' "
                "or leave out --fold"
            )
        if not 0 <= fold < int(info["folds"]):
            raise NotFound(
                f"fold {fold} does not exist: dataset {dataset!r} has "
                f"{info['folds']} folds (0 to {int(info['folds']) - 1})"
            )
        folds = reg.folds(dataset)
        keep = {s.id for s in samples if folds.get(s.id) == fold}
    labelled = [(i, s) for i, s in enumerate(samples) if s.id in keep and s.target is not None]
    if not labelled:
        raise UsageError(
            f"dataset {dataset!r} has no labelled samples"
            + (f" in fold {fold}" if fold is not None else "")
            + "; evaluate needs a dataset with a Target column"
        )
    return fold, labelled


def plot_f1(reports: Sequence[EvaluationReport], path: Path) -> Path:
    """Per-class F1 bars, one colour per report (drawn by ``hpatool.plots``)."""
    from hpatool.plots import plot_f1 as draw

    first = reports[0]
    where = f" fold {first.fold}" if first.fold is not None else ""
    series = [
        (f"{r.scoring_text}: macro F1 {r.macro_f1:.3f}", [c.f1 for c in r.classes]) for r in reports
    ]
    return draw(series, f"Per-class F1 on {first.dataset}{where}", path)
