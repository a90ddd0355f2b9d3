"""Out-of-fold (OOF) predictions: a run's ``oof.csv`` and the summary of several runs' files.

At the end of every run, training scores its validation fold with the best checkpoint and the
run's view (crop, crops, aggregation, TTA; seed 0) and writes ``oof.csv`` in the run folder:
header ``Id,0,1,...,27``, one row per validation sample, probabilities with full precision
(``repr(float)``, so a file read back gives the same floats). ``summarize_oof`` puts the files
of several runs of one dataset together (an id in several files gets their mean), tunes
per-class thresholds on them all (``metrics.tune_thresholds``) and reports two OOF macro F1s
(no ``--min-labels`` top-up):

- the *held-out* one, the figure to compare options by: fold k's predictions are thresholded
  with thresholds tuned only on the other folds' predictions (``metrics.crossfit``, the fold
  being the run's validation fold), then all folds are scored together; the thresholds
  applied to each fold are ``heldout_thresholds``. One fold has no held-out figure (``None``).
- the *in-sample* one, ``macro_f1(y_true, probs >= thresholds)`` with thresholds tuned on all
  the predictions it scores: optimistic, most for rare classes; kept, and labelled so.

Light to import: numpy and the standard library only.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpatool._io import not_utf8_where, write_csv
from hpatool.engine.metrics import (
    ClassReport,
    crossfit,
    macro_f1,
    per_class_report,
    tune_thresholds,
)
from hpatool.engine.runs.run_dir import OOF_FILE, run_view
from hpatool.engine.views import View
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import NUM_CLASSES

if TYPE_CHECKING:
    from hpatool.registry import Registry, RunRecord

#: ``oof.csv``'s header: ``Id`` then the class numbers.
OOF_HEADER = ("Id", *(str(c) for c in range(NUM_CLASSES)))


def write_oof(path: Path, ids: Sequence[str], probs: np.ndarray) -> Path:
    """``oof.csv`` (atomically): one row per id, its 28 probabilities at full precision."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (len(ids), NUM_CLASSES):
        raise ValueError(f"probs of shape {p.shape} for {len(ids)} ids")
    rows = ([sid, *(repr(float(v)) for v in row)] for sid, row in zip(ids, p, strict=True))
    return write_csv(path, OOF_HEADER, rows)


def read_oof(
    path: Path, what: str = "an oof.csv", made_by: str = "'hpatool train'"
) -> tuple[list[str], np.ndarray]:
    """The ids and ``(n, 28)`` probabilities of an ``oof.csv`` (or of another file of that
    shape, ``what``, written by ``made_by``: ``predict --probs``); a file that is not one is a
    one-line ``DataError`` naming the line and column."""
    ids: list[str] = []
    rows: list[list[float]] = []
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != OOF_HEADER:
                raise DataError(
                    f"{path}, line 1: not {what} (the header must be Id,0,1,...,"
                    f"{NUM_CLASSES - 1}); it is written by {made_by}"
                )
            for line, raw in enumerate(reader, start=2):
                if not raw:
                    continue
                if len(raw) != len(OOF_HEADER):
                    raise DataError(
                        f"{path}, line {line}: {len(raw)} columns, expected {len(OOF_HEADER)}"
                    )
                values: list[float] = []
                for col, text in zip(OOF_HEADER[1:], raw[1:], strict=True):
                    try:
                        v = float(text)
                    except ValueError:
                        v = float("nan")
                    if not 0.0 <= v <= 1.0:
                        raise DataError(
                            f"{path}, line {line}, column {col}: {text!r} is not a probability "
                            "(0 to 1)"
                        )
                    values.append(v)
                ids.append(raw[0])
                rows.append(values)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}, {not_utf8_where(Path(path))}: not {what}") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not {what} ({exc})") from None
    seen: set[str] = set()
    for i, sid in enumerate(ids):
        if sid in seen:
            raise DataError(f"{path}, line {i + 2}: id {sid!r} appears twice")
        seen.add(sid)
    probs = np.asarray(rows, dtype=np.float64).reshape(len(ids), NUM_CLASSES)
    return ids, probs


def _heldout(
    y_true: np.ndarray, probs: np.ndarray, folds: np.ndarray
) -> tuple[float, list[ClassReport], dict[int, np.ndarray]] | None:
    """The held-out macro F1, per-class report and thresholds by fold (``metrics.crossfit``
    over the folds); ``None`` with one fold."""
    if len(set(folds.tolist())) < 2:
        return None
    pred, by_fold = crossfit(y_true, probs, folds)
    return macro_f1(y_true, pred), per_class_report(y_true, pred), by_fold


@dataclass
class OofSummary:
    """Several runs' OOF predictions on one dataset, put together."""

    dataset: str  # the runs' first dataset
    ids: list[str]  # samples with an OOF prediction, in dataset order
    probs: np.ndarray  # (n, 28); an id in several runs' oof.csv: their mean
    y_true: np.ndarray  # (n, 28) from the registry's labels
    dataset_samples: int  # labelled samples of the dataset
    thresholds: np.ndarray  # tune_thresholds(y_true, probs)
    macro_f1: float  # in-sample: macro_f1(y_true, probs >= thresholds)
    classes: list[ClassReport]  # in-sample: per_class_report(y_true, probs >= thresholds)
    views: dict[str, View] = field(default_factory=dict)  # run name -> its view
    without_oof: list[str] = field(default_factory=list)  # runs with no oof.csv (skipped)
    folds: np.ndarray | None = None  # (n,) the fold of each id (its run's validation fold)
    #: held out (cross-fitted over the folds); None with fewer than two folds
    heldout_macro_f1: float | None = None
    heldout_classes: list[ClassReport] | None = None
    heldout_thresholds: dict[int, np.ndarray] | None = None  # fold -> thresholds applied to it

    @property
    def fold_list(self) -> list[int]:
        return [] if self.folds is None else sorted({int(f) for f in self.folds})


def mean_prediction(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """One id's predictions from several runs: the plain mean when their weights are equal
    (bit for bit what an unweighted summary gives), else the weighted mean."""
    if len(parts) == 1:
        return parts[0][1]
    if len({w for w, _ in parts}) == 1:
        return np.asarray(sum(row for _, row in parts)) / len(parts)
    total = sum(w for w, _ in parts)
    return np.asarray(sum(w * row for w, row in parts)) / total


def _collect(
    runs: Sequence[RunRecord], weights: Sequence[float] | None
) -> tuple[dict[str, list[tuple[float, np.ndarray]]], dict[str, int], dict[str, View], list[str]]:
    """The runs' ``oof.csv`` rows by id (each with its run's weight), the fold of each id (its
    first run's validation fold), each run's view, and the runs without the file."""
    parts: dict[str, list[tuple[float, np.ndarray]]] = {}
    fold_of: dict[str, int] = {}
    views: dict[str, View] = {}
    without: list[str] = []
    for k, run in enumerate(runs):
        path = Path(run.out_dir) / OOF_FILE
        if not path.is_file():
            without.append(run.name)
            continue
        ids, probs = read_oof(path)
        w = 1.0 if weights is None else float(weights[k])
        fold = run.fold if run.fold is not None else -1 - k  # a run without a fold: its own
        for sid in ids:
            fold_of.setdefault(sid, fold)
        for sid, row in zip(ids, probs, strict=True):
            parts.setdefault(sid, []).append((w, row))
        view = run_view(Path(run.out_dir))
        if view is not None:
            views[run.name] = view
    return parts, fold_of, views, without


def summarize_oof(
    reg: Registry, runs: Sequence[RunRecord], weights: Sequence[float] | None = None
) -> OofSummary:
    """Put the ``oof.csv`` of ``runs`` together (see the module docstring; an id in several
    files gets their mean, weighted by ``weights`` when given: an ensemble's weights). All
    runs must share their first dataset (a ``UsageError`` otherwise); none with an
    ``oof.csv`` is ``NotFound``; an id that is not a labelled sample of the dataset is a
    ``DataError`` naming the file."""
    from hpatool.labels import to_multihot

    if not runs:
        raise NotFound("no runs to summarise")
    datasets = {r.name: (r.datasets[0] if r.datasets else "") for r in runs}
    first = datasets[runs[0].name]
    other = next((n for n, d in datasets.items() if d != first), None)
    if other is not None:
        raise UsageError(
            f"run {other!r} validates on dataset {datasets[other]!r}, run {runs[0].name!r} on "
            f"{first!r}; out-of-fold predictions can only be put together on one dataset"
        )
    parts, fold_of, views, without = _collect(runs, weights)
    if not parts:
        names = ", ".join(r.name for r in runs)
        raise NotFound(
            f"none of the runs ({names}) has an {OOF_FILE}; it is written at the end of a run "
            "('hpatool train --resume --name RUN' writes it for a run whose epochs are done)"
        )
    samples = reg.samples(first)
    labelled = {s.id: (i, s.target) for i, s in enumerate(samples) if s.target is not None}
    unknown = [sid for sid in parts if sid not in labelled]
    if unknown:
        owner = next(
            r.name
            for r in runs
            if r.name not in without and unknown[0] in read_oof(Path(r.out_dir) / OOF_FILE)[0]
        )
        raise DataError(
            f"{Path(reg.run(owner).out_dir) / OOF_FILE}: id {unknown[0]!r} is not a labelled "
            f"sample of dataset {first!r} ({len(unknown)} such ids); the file belongs to "
            "another dataset or its labels changed"
        )
    ordered = sorted(parts, key=lambda sid: labelled[sid][0])
    probs = np.stack([mean_prediction(parts[sid]) for sid in ordered])
    y_true = to_multihot([labelled[sid][1] for sid in ordered])
    thresholds = tune_thresholds(y_true, probs)
    pred = probs >= thresholds
    folds = np.asarray([fold_of[sid] for sid in ordered], dtype=np.int64)
    heldout = _heldout(y_true, probs, folds)
    return OofSummary(
        dataset=first,
        ids=ordered,
        probs=probs,
        y_true=y_true,
        dataset_samples=len(labelled),
        thresholds=thresholds,
        macro_f1=macro_f1(y_true, pred),
        classes=per_class_report(y_true, pred),
        views=views,
        without_oof=without,
        folds=folds,
        heldout_macro_f1=heldout[0] if heldout else None,
        heldout_classes=heldout[1] if heldout else None,
        heldout_thresholds=heldout[2] if heldout else None,
    )
