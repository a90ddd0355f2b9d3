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
validation fold against 0.203 on a held-out half, measured on synthetic data). So the figures
hpatool tells a user to compare by are *held out* (cross-fitted): each group's predictions are
thresholded with thresholds tuned on the other groups only (``crossfit``), then all groups are
scored together. Across folds the groups are the folds (``hpatool.engine.runs.oof``); within one
set of predictions (a run's validation fold each epoch, ``evaluate`` on samples its thresholds
were tuned on) they are two random halves, both ways, averaged over ``HELDOUT_SEEDS`` seeded
splittings (``split_half``).
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
    return class_report(class_scores(y_true, y_pred))


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


#: Seeded random splittings in halves that ``split_half`` averages over.
HELDOUT_SEEDS = 5


def crossfit(
    y_true: np.ndarray, probs: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Held-out binary predictions: the rows of each group thresholded with thresholds tuned
    (``tune_thresholds``) on the rows of the other groups only; and those thresholds by group.
    A single group has nothing to tune on: a ``ValueError``."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    g = np.asarray(groups)
    names = [int(v) for v in np.unique(g)]
    if len(names) < 2:
        raise ValueError("held-out thresholds need at least two groups")
    pred = np.zeros(p.shape, dtype=bool)
    thresholds: dict[int, np.ndarray] = {}
    for name in names:
        mine = g == name
        thresholds[name] = tune_thresholds(t[~mine], p[~mine])
        pred[mine] = p[mine] >= thresholds[name]
    return pred, thresholds


def split_half(
    y_true: np.ndarray, probs: np.ndarray, seeds: int = HELDOUT_SEEDS
) -> ClassScores | None:
    """Held-out per-class scores of one set of predictions: split it in two random halves,
    tune on one and score the other, both ways (``crossfit`` with two groups), and average
    each class's precision, recall and F1 over ``seeds`` seeded splittings (seeds 0, 1, ...);
    ``None`` with fewer than 2 rows. Its ``f1.mean()`` is the held-out macro F1."""
    t = np.asarray(y_true).astype(bool)
    n = t.shape[0]
    if n < 2:
        return None
    runs: list[ClassScores] = []
    for seed in range(seeds):
        groups = np.zeros(n, dtype=np.int64)
        groups[np.random.default_rng(seed).permutation(n)[n // 2 :]] = 1
        pred, _ = crossfit(t, probs, groups)
        runs.append(class_scores(t, pred))
    return ClassScores(
        precision=np.mean([r.precision for r in runs], axis=0),
        recall=np.mean([r.recall for r in runs], axis=0),
        f1=np.mean([r.f1 for r in runs], axis=0),
        support=runs[0].support,
    )


def heldout_macro_f1(y_true: np.ndarray, probs: np.ndarray, seeds: int = HELDOUT_SEEDS) -> float:
    """``split_half``'s macro F1 (NaN with fewer than 2 rows)."""
    scores = split_half(y_true, probs, seeds)
    return float("nan") if scores is None else float(scores.f1.mean())


def class_report(scores: ClassScores) -> list[ClassReport]:
    """``ClassScores`` as one named row per class."""
    return [
        ClassReport(
            c,
            CLASS_NAMES[c],
            float(scores.precision[c]),
            float(scores.recall[c]),
            float(scores.f1[c]),
            int(scores.support[c]),
        )
        for c in range(len(scores.f1))
    ]


def constant_baseline_macro_f1(y_true: np.ndarray) -> float:
    """Macro F1 of the best constant predictor: per class, always-positive (F1 = 2p / (1 + p)
    for prevalence p) or always-negative (F1 = 0), whichever is higher."""
    t = np.asarray(y_true, dtype=np.float64)
    p = t.mean(axis=0)
    return float((2 * p / (1 + p)).mean())
