"""Parsers of option values that more than one room of the engine needs, light to import (no
torch): ``--loss`` (``parse_loss``: a loss or a weighted sum), ``--threshold prior`` and
``prior=FILE.csv`` (``parse_prior``), and the per-class CSV tables of ``prior=FILE.csv`` and
``--threshold FILE.csv`` (``read_shares``, ``read_thresholds_file``: one value per class, by
index or name, checked row by row), and ``--threshold`` itself (``parse_threshold``,
``threshold_file``). ``engine.config`` validates options with them; the losses
(``engine.training.losses``) and prior matching (``engine.scoring.prior``) use them too."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hpatool._io import not_utf8_where, path_problem
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import CLASS_NAMES, NUM_CLASSES

#: The loss terms ``--loss`` can name.
LOSS_TERMS = ("bce", "focal", "lovasz")
PRIOR = "prior"


def parse_loss(spec: str) -> list[tuple[str, float]]:
    """``'bce*0.5+lovasz'`` -> ``[('bce', 0.5), ('lovasz', 1.0)]``; a ``UsageError`` naming the
    part at fault otherwise."""
    text = str(spec).strip().lower()
    terms: list[tuple[str, float]] = []
    example = "use bce, focal, lovasz, or a weighted sum such as focal+lovasz or bce*0.5+lovasz*1"
    if not text:
        raise UsageError(f"--loss {spec!r} is empty; {example}")
    for part in text.split("+"):
        name, _, weight_text = part.strip().partition("*")
        name = name.strip()
        if name not in LOSS_TERMS:
            raise UsageError(f"--loss {spec}: {name!r} is not a loss; {example}")
        weight = 1.0
        if weight_text.strip():
            try:
                weight = float(weight_text)
            except ValueError:
                raise UsageError(
                    f"--loss {spec}: weight {weight_text.strip()!r} of {name} is not a number; "
                    f"{example}"
                ) from None
        if not (weight > 0 and math.isfinite(weight)):
            raise UsageError(f"--loss {spec}: the weight of {name} must be positive; {example}")
        if any(n == name for n, _ in terms):
            raise UsageError(f"--loss {spec}: {name} is named twice; give each loss once")
        terms.append((name, weight))
    return terms


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
        raise NotFound(
            f"--threshold prior={path}: {path_problem(path)} (a CSV with columns class, share)"
        )
    return read_class_values(path, "share")


def read_thresholds_file(path: Path) -> np.ndarray:
    """The ``(28,)`` thresholds of ``--threshold FILE.csv`` (columns ``class``, ``threshold``;
    NaN where the file names no class: the tuned threshold stays)."""
    if not path.is_file():
        raise NotFound(
            f"--threshold {path}: {path_problem(path)} (a CSV with columns class, threshold)"
        )
    return read_class_values(path, "threshold")


def read_class_values(path: Path, column: str) -> np.ndarray:
    """The ``(28,)`` values of a CSV with columns ``class`` (an index 0..27 or a class name)
    and ``column`` (a number in [0, 1]); NaN for a class it does not name. A file that is not
    one, a bad class or value, or a class given twice is a one-line ``DataError`` naming the
    file and line."""
    shares = np.full(NUM_CLASSES, np.nan)
    lowered = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
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
    except UnicodeDecodeError:
        where = not_utf8_where(path)
        raise DataError(f"{path}, {where}; save the CSV as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV of class {column}s ({exc})") from None
    if np.isnan(shares).all():
        raise DataError(f"{path}: names no class; give one row per class: class,{column}")
    return shares


def threshold_file(threshold: str | float) -> Path | None:
    """``--threshold FILE.csv``: the file of per-class thresholds (columns ``class``,
    ``threshold``; ``engine.scoring.prior.read_thresholds_file``), when the value names an existing
    file or ends in ``.csv``; else ``None``."""
    if not isinstance(threshold, str) or threshold.strip().lower() == "auto":
        return None
    if parse_prior(threshold) is not None:
        return None
    text = threshold.strip()
    path = Path(text).expanduser()
    return path if text.lower().endswith(".csv") or path.is_file() else None


def parse_threshold(threshold: str | float) -> float | None:
    """``--threshold``: ``None`` for ``auto`` (the run's tuned thresholds), for ``prior`` /
    ``prior=FILE.csv`` (``engine.scoring.prior``) and for a thresholds file (``threshold_file``):
    the
    tuned thresholds are the base those replace; else one number in (0, 1) for every class."""
    if isinstance(threshold, str) and threshold.strip().lower() == "auto":
        return None
    if parse_prior(threshold) is not None or threshold_file(threshold) is not None:
        return None
    try:
        value = float(threshold)
    except ValueError:
        raise UsageError(
            f"--threshold {threshold!r} is invalid; use 'auto', 'prior', 'prior=FILE.csv', a "
            "number in (0, 1) or a CSV file of per-class thresholds (class,threshold)"
        ) from None
    if not 0.0 < value < 1.0:
        raise UsageError(f"--threshold {value} is out of range; use a number in (0, 1)")
    return value
