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

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import CLASS_NAMES, NUM_CLASSES

PRIOR = "prior"


def parse_prior(threshold: str | float) -> Path | str | None:
    """``--threshold prior`` -> ``"training"``; ``prior=FILE.csv`` -> the file's path; any other
    value -> ``None`` (not this mode)."""
    if not isinstance(threshold, str):
        return None
    text = threshold.strip()
    if text.lower() == PRIOR:
        return "training"
    if text.lower().startswith(PRIOR + "="):
        name = text[len(PRIOR) + 1 :].strip()
        if not name:
            raise UsageError(
                "--threshold prior= names no file; give prior=FILE.csv (columns class, share)"
            )
        return Path(name).expanduser()
    return None


def read_shares(path: Path) -> np.ndarray:
    """The ``(28,)`` target shares of ``prior=FILE.csv`` (NaN where the file names no class);
    a file that is not one is a one-line error naming the row."""
    if not path.is_file():
        raise NotFound(f"--threshold prior={path}: no such file (a CSV with columns class, share)")
    return read_class_values(path, "share")


def read_thresholds_file(path: Path) -> np.ndarray:
    """The ``(28,)`` thresholds of ``--threshold FILE.csv`` (columns ``class``, ``threshold``;
    NaN where the file names no class: the tuned threshold stays)."""
    if not path.is_file():
        raise NotFound(f"--threshold {path}: no such file (a CSV with columns class, threshold)")
    return read_class_values(path, "threshold")


def read_class_values(path: Path, column: str) -> np.ndarray:
    """The ``(28,)`` values of a CSV with columns ``class`` (an index 0..27 or a class name)
    and ``column`` (a number in [0, 1]); NaN for a class it does not name. A file that is not
    one, a bad class or value, or a class given twice is a one-line ``DataError`` naming the
    file and line."""
    shares = np.full(NUM_CLASSES, np.nan)
    lowered = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
            if "class" not in fields or column not in fields:
                raise DataError(
                    f"{path}: needs columns class and {column} (has {', '.join(fields) or 'none'})"
                )
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
                key = row["class"]
                index = int(key) if key.isdigit() else lowered.get(key.lower(), -1)
                if not 0 <= index < NUM_CLASSES:
                    raise DataError(
                        f"{path}, line {line}: class {key!r} is not 0..{NUM_CLASSES - 1} nor a "
                        "class name such as 'Lysosomes'"
                    )
                try:
                    share = float(row[column])
                except ValueError:
                    share = math.nan
                if not 0.0 <= share <= 1.0:
                    raise DataError(
                        f"{path}, line {line}: {column} {row[column]!r} of class {key!r} is not "
                        "a number in [0, 1]"
                    )
                if not np.isnan(shares[index]):
                    raise DataError(f"{path}, line {line}: class {key!r} is given twice")
                shares[index] = share
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV of class {column}s ({exc})") from None
    if np.isnan(shares).all():
        raise DataError(f"{path}: names no class; give one row per class: class,{column}")
    return shares


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
