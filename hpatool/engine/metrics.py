"""Per-class precision, recall and F1, macro F1, and per-class threshold tuning, in numpy.

``class_scores`` is the one per-class implementation: training's ``macro_f1``, threshold tuning
and ``hpatool evaluate``'s report all count true and false positives through it. A score whose
denominator is 0 is 0 (as scikit-learn's ``zero_division=0``), so a class with no positives and
no predicted positives has F1 0. ``tune_thresholds`` picks, per class, the threshold on a grid
that maximises that class's F1 on the given predictions (ties go to the threshold closest to
0.5), then shrinks it by how few positives the class has towards the *pooled* threshold: the
one threshold that, applied to every class, gives the highest macro F1 (ties closest to 0.5).
A class with ``n`` positives gets ``t_pooled + (t_best - t_pooled) * n / (n + SHRINK_POSITIVES)``:
a threshold fitted to one or two positives (where any low value separates them) stays near the
model's overall threshold instead of falling to 0.02 and labelling most images with the class,
a class with hundreds of positives keeps nearly its F1-best threshold. A class without
positives keeps 0.5: with nothing to fit, the pooled threshold of an under-trained model
(low, where every probability is low) labelled every test image with such classes (found on
the GPU with one-epoch fold models). Measured with ``benchmarks/views.py`` (synthetic data, three
folds, thresholds tuned on one half of a fold and scored on the other): held-out macro F1
0.203 / 0.260 / 0.227 with the pooled anchor, 0.195 / 0.217 / 0.182 without shrinking, and
0.155 / 0.178 / 0.117 shrinking towards 0.5 (an under-trained model's rare-class
probabilities rarely reach 0.5, so that anchor silences them).

Thresholds tuned on the same predictions they are scored on flatter that F1 (0.252 tuned on a
validation fold against 0.203 on a held-out half, measured on synthetic data): a run's
per-epoch tuned macro F1 is optimistic, and the out-of-fold macro F1 (``hpatool.engine.oof``)
is the figure to compare options by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpatool.labels import CLASS_NAMES

DEFAULT_THRESHOLD = 0.5
#: How strongly a class's tuned threshold is pulled towards the pooled threshold: with ``n``
#: positives it keeps ``n / (n + SHRINK_POSITIVES)`` of its distance from it.
SHRINK_POSITIVES = 10
#: Thresholds tried per class: 0.02, 0.03, ..., 0.98.
THRESHOLD_GRID: np.ndarray = np.round(np.arange(0.02, 0.985, 0.01), 2)


@dataclass(frozen=True)
class ClassScores:
    """Per-class arrays (one value per column of the labels)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true positives + false negatives: the samples that have the class


def _ratio(num: np.ndarray, denom: np.ndarray) -> np.ndarray:
    return np.divide(num, denom, out=np.zeros_like(num, dtype=np.float64), where=denom > 0)


def class_scores(y_true: np.ndarray, y_pred: np.ndarray) -> ClassScores:
    """Precision, recall, F1 and support of each class (column) for binary ``(n, C)`` truths
    and predictions; 0 where a score is undefined."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = (t & p).sum(axis=0).astype(np.float64)
    fp = (~t & p).sum(axis=0).astype(np.float64)
    fn = (t & ~p).sum(axis=0).astype(np.float64)
    return ClassScores(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        support=t.sum(axis=0),
    )


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of each class (column) for binary ``(n, C)`` truths and predictions."""
    return class_scores(y_true, y_pred).f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over classes of the per-class F1 (0 for a class with nothing true or predicted)."""
    return float(f1_per_class(y_true, y_pred).mean())


@dataclass
class ClassReport:
    """One row of a per-class report (as ``hpatool evaluate`` shows and prints it as JSON)."""

    index: int
    name: str
    precision: float
    recall: float
    f1: float
    support: int


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray) -> list[ClassReport]:
    """``class_scores`` as one named row per class."""
    s = class_scores(y_true, y_pred)
    return [
        ClassReport(
            c,
            CLASS_NAMES[c],
            float(s.precision[c]),
            float(s.recall[c]),
            float(s.f1[c]),
            int(s.support[c]),
        )
        for c in range(len(s.f1))
    ]


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """Binary predictions: ``probs >= threshold`` per class."""
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    grid: np.ndarray = THRESHOLD_GRID,
    *,
    anchor: float | None = None,
    shrink: float | None = None,
) -> np.ndarray:
    """Per-class thresholds maximising each class's F1 on ``(y_true, probs)``, shrunk towards
    the pooled threshold (or ``anchor``) for classes with few positives (see the module
    docstring); ``shrink`` overrides ``SHRINK_POSITIVES`` (0: no shrinking)."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    k = SHRINK_POSITIVES if shrink is None else shrink
    n_classes = t.shape[1]
    scores = np.empty((len(grid), n_classes))
    for i, thr in enumerate(grid):
        scores[i] = f1_per_class(t, p >= thr)
    # Among the grid points with the top score, take the one closest to 0.5.
    distance = np.abs(np.asarray(grid) - DEFAULT_THRESHOLD)

    def closest_top(values: np.ndarray) -> float:
        candidates = np.flatnonzero(values >= values.max() - 1e-12)
        return float(grid[candidates[np.argmin(distance[candidates])]])

    if anchor is None:
        anchor = closest_top(scores.mean(axis=1)) if t.any() else DEFAULT_THRESHOLD
    best = np.full(n_classes, DEFAULT_THRESHOLD)
    positives = t.sum(axis=0)
    for c in range(n_classes):
        n = int(positives[c])
        if not n:
            continue
        fitted = closest_top(scores[:, c])
        best[c] = anchor + (fitted - anchor) * n / (n + k) if k else fitted
    return best


def constant_baseline_macro_f1(y_true: np.ndarray) -> float:
    """Macro F1 of the best constant predictor: per class, always-positive (F1 = 2p / (1 + p)
    for prevalence p) or always-negative (F1 = 0), whichever is higher."""
    t = np.asarray(y_true, dtype=np.float64)
    p = t.mean(axis=0)
    return float((2 * p / (1 + p)).mean())
