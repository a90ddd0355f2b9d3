"""``hpatool evaluate``: per-class precision, recall, F1 and support, and macro F1, of a
trained model on labelled samples, scored as ``predict`` scores
(``hpatool.engine.scoring.ensemble``),
with both aggregations of the same views; and the figure of ``--plot``.

Figures that do not flatter: each aggregation (``max``, ``mean``) is scored with thresholds
tuned for that aggregation, held out (``metrics.split_half``: tuned on one half of its own
predictions, scored on the other, both ways, over seeded splittings): ``macro_f1_by_agg``. The
thresholds ``--threshold`` applies (the run's, tuned on its validation fold) give
``macro_f1``; when they were tuned on samples that are scored here (``evaluate --run R`` on the
run's own fold), that figure is in sample, and the report says so (``tuned_on_scored``) and
leads with the held-out one (``headline``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine.config import PredictConfig, parse_threshold, threshold_file
from hpatool.engine.metrics import (
    DEFAULT_THRESHOLD,
    ClassReport,
    class_report,
    macro_f1,
    per_class_report,
    split_half,
)
from hpatool.engine.scoring.ensemble import dataset_name, score_or_stop
from hpatool.engine.scoring.model_source import thresholds_tuned_on, training_data
from hpatool.engine.scoring.predict_files import model_inputs
from hpatool.engine.scoring.score import (
    UNREADABLE,
    ScoreItem,
    Scores,
    decide_labels,
    other_agg,
)
from hpatool.engine.scoring.selection import (
    Candidates,
    LeftOut,
    available,
    evaluation_samples,
    trained_on,
    trained_on_any,
    warn_ensemble_trained_on,
    warn_once,
    warn_trained_on,
)
from hpatool.engine.views import Size, View
from hpatool.errors import WorkFailed
from hpatool.labels import NUM_CLASSES
from hpatool.outputs import Inputs, check_figure
from hpatool.registry import Registry


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
    plot: Path | None = None  # the per-class figure, if one was asked for
    windows: int = 0  # windows scored per image (``View.windows``), by the first model
    limit: int | None = None  # the run's --limit, when its first N samples were evaluated
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count
    trained_on: int = 0  # evaluated samples that were in the run's training set
    run: str | None = None  # the run (or checkpoint) the training data comes from
    #: per aggregation, held-out per-class scores with thresholds tuned for that aggregation
    heldout_classes: dict[str, list[ClassReport]] = field(default_factory=dict)
    #: the same views aggregated the other way (``mean`` for ``max``), held out
    other_classes: list[ClassReport] = field(default_factory=list)
    tta: str = "crops"
    size: Size = (0, 0)  # (height, width) of the first image
    #: of the scored samples, how many the applied thresholds were tuned on (``--threshold
    #: auto``: the run's validation fold, an ensemble's out-of-fold samples)
    tuned_on_scored: int = 0
    cached: bool = False  # the images were read from the dataset's decoded cache
    #: the checkpoint file, or ``ensemble of 3 models (EXP-f0, EXP-f1, EXP-f2)``
    model_text: str = ""
    models: list[str] = field(default_factory=list)  # the runs (or checkpoint files) scoring
    #: how the images were scored, in words (``max of 8 crops of 256px``, ...)
    scoring_text: str = ""

    @property
    def view(self) -> View:
        return View(self.crop, self.crops, self.agg, self.tta)

    @property
    def whole_image(self) -> bool:
        return self.view.fills(self.size)

    def text_for(self, agg: str) -> str:
        """How the images were scored, with aggregation ``agg`` (the first model's view)."""
        return self.view.with_agg(agg).text(self.size)

    @property
    def other_agg(self) -> str:
        return other_agg(self.agg)

    @property
    def in_sample(self) -> bool:
        """Whether the applied thresholds were tuned on (some of) the samples scored."""
        return self.tuned_on_scored > 0

    @property
    def macro_f1_by_agg(self) -> dict[str, float]:
        """Held-out macro F1 under each aggregation of the same views, each with thresholds
        tuned for it (one, if the image is one window: then max and mean are the same)."""
        aggs = [self.agg] if self.windows == 1 else sorted(self.heldout_classes)
        return {
            agg: float(np.mean([c.f1 for c in self.heldout_classes[agg]]))
            for agg in aggs
            if agg in self.heldout_classes
        }

    @property
    def macro_f1_heldout(self) -> float | None:
        return self.macro_f1_by_agg.get(self.agg)

    @property
    def headline(self) -> float:
        """The figure to compare by: held out when the applied thresholds were tuned on the
        scored samples, else the one with the applied thresholds."""
        held = self.macro_f1_heldout
        return held if self.in_sample and held is not None else self.macro_f1

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fold": self.fold,
            "limit": self.limit,
            "samples": self.samples,
            "left_out": dict(sorted(self.left_out.items())),
            "trained_on": self.trained_on,
            "checkpoint": str(self.checkpoint),
            "models": self.models,
            "crop": self.crop,
            "crops": self.crops,
            "agg": self.agg,
            "tta": self.tta,
            "scoring": self.scoring_text,
            "threshold": self.threshold,
            "macro_f1": self.macro_f1,
            "macro_f1_at_0.5": self.macro_f1_at_05,
            "macro_f1_heldout": self.macro_f1_heldout,
            "macro_f1_by_agg": self.macro_f1_by_agg,
            "tuned_on_scored": self.tuned_on_scored,
            "cached": self.cached,
            "in_sample": self.in_sample,
            "headline": self.headline,
            "classes": [c.__dict__ for c in self.classes],
            "heldout_classes": {
                agg: [c.__dict__ for c in rows] for agg, rows in self.heldout_classes.items()
            },
        }


def evaluate_run(
    reg: Registry,
    config: PredictConfig,
    progress: ProgressFn | None = None,
    inputs: Inputs = (),
) -> EvaluationReport:
    """Per-class precision, recall, F1 and support and macro F1 on the labelled samples of
    ``config.dataset`` (only fold ``config.fold`` if given; for the run's own validation dataset
    the run's fold is the default, and the run's ``--limit`` applies), scored as ``predict``
    scores; with ``config.plot``, a per-class figure too.

    Everything is checked before scoring: the samples whose images are not there or whose
    headers cannot be read are left out (one ``LeftOut`` warning; an image that still fails
    while scored is left out too, with a second one), and a ``TrainedOn`` warning says how
    many of the evaluated samples the run trained on."""
    dataset = dataset_name(config)
    plot = _plot_target(reg, config, inputs)
    checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
    names = _run_names(reg, config)
    trained = (
        None if len(names) > 1 else training_data(reg, names[0] if names else None, checkpoint)
    )
    chosen = evaluation_samples(reg, config, trained, names)
    cands = available(reg, dataset, chosen.labelled, chosen.where(dataset))
    check = _TrainedOnCheck(reg, names, trained)
    scored = score_or_stop(
        reg, cands, config, strict=False, progress=progress, before=check.before, both=True
    )
    failed = _left_out_while_scoring(cands, scored.scores)
    targets = dict(chosen.labelled)
    items = [t for t in cands.items if t.index in scored.scores.probs]
    if not items:
        raise WorkFailed(f"no image of {chosen.where(dataset)} could be scored ({failed})")
    from hpatool.labels import to_multihot

    y_true = to_multihot([targets[t.index].target for t in items])
    probs = np.stack([scored.scores.probs[t.index] for t in items])
    y_pred = _decide(probs, scored.thresholds, config.min_labels)
    classes = per_class_report(y_true, y_pred)
    other = np.stack([scored.scores.other[t.index] for t in items])
    heldout = _heldout_by_agg(y_true, {scored.view.agg: probs, other_agg(scored.view.agg): other})
    tuned_on = _tuned_on_scored(reg, config, scored, items)
    report = EvaluationReport(
        dataset=dataset,
        fold=chosen.fold,
        samples=len(items),
        crop=scored.crop,
        crops=scored.view.crops,
        agg=scored.view.agg,
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
        limit=chosen.limit,
        left_out=dict(cands.left_out),
        trained_on=check.count(items) if failed else check.overlap,
        run=trained.run if trained is not None else None,
        tta=scored.view.tta,
        size=scored.models[0].size,
        model_text=scored.model_text,
        models=[m.name for m in scored.models],
        scoring_text=scored.scoring_text,
        heldout_classes=heldout,
        other_classes=heldout.get(other_agg(scored.view.agg), []),
        tuned_on_scored=tuned_on,
        cached=scored.cached,
    )
    if plot is not None and report.is_main:
        report.plot = plot_evaluation(report, plot)
    return report


@dataclass
class _TrainedOnCheck:
    """How many evaluated samples the model (or any model of an ensemble) trained on, counted
    and warned about right before scoring (``before``), again after it when some failed."""

    reg: Registry
    names: list[str]
    trained: Any  # the one model's TrainingData, or None for an ensemble or a bare checkpoint
    overlap: int = 0

    def count(self, items: list[ScoreItem]) -> int:
        if len(self.names) > 1:
            each = [training_data(self.reg, n, None) for n in self.names]
            return trained_on_any(self.reg, [d for d in each if d is not None], items)
        return trained_on(self.reg, self.trained, items)

    def before(self, c: Candidates) -> None:
        if c.left_out:
            warn_once(f"{c.summary()}; scoring the other {len(c.items):,}", LeftOut)
        self.overlap = self.count(c.items)
        if len(self.names) > 1:
            warn_ensemble_trained_on(self.overlap, len(c.items), len(self.names))
        else:
            warn_trained_on(self.overlap, len(c.items), self.trained)


def _plot_target(reg: Registry, config: PredictConfig, inputs: Inputs) -> Path | None:
    """``--plot``, checked before any work (never the registry, an input or a model file)."""
    if config.plot is None:
        return None
    return check_figure(config.plot, "--plot", reg, [*inputs, *model_inputs(reg, config)])


def _run_names(reg: Registry, config: PredictConfig) -> list[str]:
    """The runs scoring: each ``--run`` and the runs of each ``--experiment``."""
    from hpatool.engine.scoring.model_source import ensemble_members

    return [name for name, _ in ensemble_members(reg, config)]


def _tuned_on_scored(
    reg: Registry, config: PredictConfig, scored: Any, items: list[ScoreItem]
) -> int:
    """How many of the scored ``items`` the applied thresholds were tuned on (0 for a number
    given as ``--threshold``)."""
    if parse_threshold(config.threshold) is not None or threshold_file(config.threshold):
        return 0
    tuned_ids = thresholds_tuned_on(reg, scored.sources)
    return sum(1 for t in items if t.id in tuned_ids)


def _heldout_by_agg(
    y_true: np.ndarray, probs_by_agg: dict[str, np.ndarray]
) -> dict[str, list[ClassReport]]:
    """Per aggregation, the held-out per-class scores with thresholds tuned on that
    aggregation's own predictions (``metrics.split_half``); none with a single sample."""
    out: dict[str, list[ClassReport]] = {}
    for agg, probs in probs_by_agg.items():
        scores = split_half(y_true, probs)
        if scores is not None:
            out[agg] = class_report(scores)
    return out


def _decide(probs: np.ndarray, thresholds: np.ndarray, min_labels: int) -> np.ndarray:
    """``(n, 28)`` booleans: the labels ``decide_labels`` gives each row of ``probs``."""
    return np.stack(
        [np.isin(np.arange(NUM_CLASSES), decide_labels(p, thresholds, min_labels)) for p in probs]
    )


def _left_out_while_scoring(cands: Candidates, scores: Scores) -> str:
    """Images that failed while they were scored (a truncated body behind a good header):
    left out like the others, with one ``LeftOut`` warning; returns its text (or ``''``)."""
    if not scores.failures:
        return ""
    for t in cands.items:
        if t.index in scores.failures:
            cands.add(UNREADABLE, t, scores.failures[t.index])
    first = min(scores.failures)
    text = (
        f"{len(scores.failures)} images of {cands.where} could not be decoded while scored and "
        f"are left out too (first: {scores.failures[first]})"
    )
    warn_once(text, LeftOut)
    return text


def plot_evaluation(report: EvaluationReport, path: Path) -> Path:
    """One figure (drawn by ``hpatool.run_plots.plot_evaluation``): per-class F1, precision and
    recall under both aggregations of the same crops, with each class's support; a class
    with no positives is marked so rather than drawn as F1 = 0."""
    from hpatool.run_plots import plot_evaluation as draw

    where = f" fold {report.fold}" if report.fold is not None else ""
    limit = f" (the run's --limit {report.limit})" if report.limit is not None else ""
    title = (
        f"{report.dataset}{where}{limit}: {report.samples:,} images, "
        f"crops of {report.crop}px, thresholds {report.threshold}"
        + (f", {report.model_text}" if len(report.models) > 1 else "")
    )
    if report.windows == 1 or not report.heldout_classes:
        what = "held out" if report.in_sample and report.heldout_classes else "thresholds applied"
        rows = (
            report.heldout_classes.get(report.agg, report.classes)
            if report.in_sample
            else (report.classes)
        )
        series = [(f"{report.scoring_text}: macro F1 {report.headline:.3f} ({what})", rows)]
    else:
        series = [
            (
                f"{report.text_for(agg)}{' (reported)' if agg == report.agg else ''}: "
                f"macro F1 {float(np.mean([c.f1 for c in rows])):.3f} held out",
                rows,
            )
            for agg, rows in sorted(report.heldout_classes.items())
        ]
    return draw(
        [(label, [(c.f1, c.precision, c.recall) for c in rows]) for label, rows in series],
        [c.support for c in report.classes],
        title,
        path,
    )
