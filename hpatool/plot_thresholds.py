"""``experiments show --plot-thresholds FILE.png``: each class's out-of-fold F1 against its
threshold, one small panel per class, with the chosen threshold marked (the one ``predict
--threshold auto`` applies) and, where the experiment has several folds, the held-out
thresholds each fold was scored with (ticks) and the held-out F1 in the panel's title. Drawn
with matplotlib's object API, like every figure of ``hpatool.plots``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpatool._io import save_figure
from hpatool.labels import CLASS_NAMES

#: The thresholds each curve is drawn at.
GRID = np.linspace(0.01, 0.99, 99)


def f1_curve(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """One class's F1 at each threshold of ``grid`` (``probs >= t``; 0 where undefined)."""
    y = np.asarray(y_true, dtype=bool)
    pred = np.asarray(probs)[None, :] >= grid[:, None]
    tp = (pred & y).sum(axis=1)
    fp = (pred & ~y).sum(axis=1)
    fn = (~pred & y).sum(axis=1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def plot_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    chosen: Sequence[float],
    heldout: dict[int, np.ndarray] | None,
    heldout_f1: Sequence[float] | None,
    title: str,
    path: Path,
) -> Path:
    """The figure (4 x 7 panels, classes in order); a class without positives is drawn empty
    and says so."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 10), dpi=100, layout="constrained")
    axes = fig.subplots(4, 7, sharex=True, sharey=True)
    for c, ax in enumerate(axes.ravel()):
        support = int(np.asarray(y_true)[:, c].sum())
        name = CLASS_NAMES[c] if len(CLASS_NAMES[c]) <= 22 else CLASS_NAMES[c][:21] + "…"
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, 1)
        if support == 0:
            ax.set_title(f"{c} {name}\nno positives", fontsize=8)
            ax.text(0.5, 0.5, "-", ha="center", va="center", color="0.5")
            continue
        curve = f1_curve(y_true[:, c], probs[:, c])
        ax.plot(GRID, curve, color="C0", lw=1.2)
        t = float(chosen[c])
        f1_at = float(f1_curve(y_true[:, c], probs[:, c], np.asarray([t]))[0])
        ax.plot([t], [f1_at], "o", color="C3", ms=5, zorder=3)
        if heldout:
            for fold_t in heldout.values():
                ax.axvline(float(fold_t[c]), color="C2", lw=0.8, alpha=0.7, ymax=0.08)
        held = f", held out {heldout_f1[c]:.2f}" if heldout_f1 is not None else ""
        ax.set_title(f"{c} {name} (n={support})\nF1 {f1_at:.2f} at {t:.2f}{held}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("threshold", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("OOF F1", fontsize=8)
    fig.suptitle(
        f"{title}\nblue: F1 of all out-of-fold predictions at each threshold; red: the tuned "
        "threshold (what predict applies); green ticks: the thresholds each fold was scored "
        "with, held out",
        fontsize=10,
    )
    return save_figure(fig, path)
