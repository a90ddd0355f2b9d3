"""``predict --threshold prior`` and ``prior=FILE.csv``: per-class thresholds that make each
class's predicted share of the scored images equal a target share (the 2018 winner's last step).

The target is each class's share in the models' training data (``config.json``'s
``class_frequency``, the mean over an ensemble's runs) or, with ``prior=FILE.csv``, the file's
(columns ``class`` and ``share``: a class index 0..27 or name, and a fraction in [0, 1]; a class
the file does not name keeps its tuned threshold). With ``n`` images scored and a share ``s``,
the ``k = round(s * n)`` most probable images get the class: the threshold is midway between
the ``k``-th and the ``k+1``-th highest probability (above the highest for ``k = 0``), so the
predicted count is ``k`` exactly unless probabilities tie there. The at-least-one-label top-up
(``--min-labels``) would add labels beyond ``k``: it is off in this mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpatool.engine.parsing import read_shares
from hpatool.errors import UsageError


def prior_thresholds(probs: np.ndarray, shares: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per-class thresholds giving each class with a target share (not NaN) its ``round(share
    * n)`` most probable of the ``n`` rows of ``probs`` (see the module docstring); the others
    keep ``fallback``'s."""
    n = probs.shape[0]
    out = np.asarray(fallback, dtype=np.float64).copy()
    if n == 0:
        return out
    for c in range(probs.shape[1]):
        if np.isnan(shares[c]):
            continue
        k = round(float(shares[c]) * n)
        ranked = np.sort(probs[:, c].astype(np.float64))[::-1]
        if k <= 0:
            out[c] = np.nextafter(ranked[0], np.inf)
        elif k >= n:
            out[c] = ranked[-1]
        else:
            high, low = ranked[k - 1], ranked[k]
            out[c] = (high + low) / 2 if high > low else high
    return out


@dataclass
class PriorMatch:
    """What ``--threshold prior`` did, per class: for the summary."""

    source: str  # "the training data" or the file
    target: np.ndarray  # (28,) target shares (NaN: not named, tuned threshold kept)
    predicted: np.ndarray  # (28,) shares of the scored images that got the class
    thresholds: np.ndarray  # (28,) the thresholds applied


def match_prior(
    spec: Path | str, probs: np.ndarray, fallback: np.ndarray, train_frequency: np.ndarray | None
) -> PriorMatch:
    """The prior-matched thresholds of the scored ``probs`` for ``spec`` (``parse_prior``)."""
    if isinstance(spec, Path):
        shares, source = read_shares(spec), str(spec)
    else:
        if train_frequency is None:
            raise UsageError(
                "--threshold prior: the model records no training class frequency (a bare "
                "--checkpoint); give the shares with --threshold prior=FILE.csv"
            )
        shares, source = np.asarray(train_frequency, dtype=np.float64), "the training data"
    thresholds = prior_thresholds(probs, shares, fallback)
    predicted = (probs >= thresholds).mean(axis=0) if len(probs) else np.zeros(probs.shape[1])
    return PriorMatch(source, shares, predicted, thresholds)
