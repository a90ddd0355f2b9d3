"""``hpatool blend PROBS.csv ... --out submission.csv``: a submission from saved probability files
(``predict --probs``), without the models.

Every file holds ``Id`` and the 28 class probabilities (``predict --probs``'s format); all must
hold the same Ids (the first file's order is kept). The blend is their mean, weighted by
``--weight`` (normalised to sum to 1; default equal). Thresholds: a number; a CSV of per-class
thresholds (``class,threshold``); ``prior=FILE.csv`` (``engine.scoring.prior``: each class's
predicted
share matched to the file's); or ``auto``: tuned (``metrics.tune_thresholds``) on the members'
out-of-fold predictions blended with the same weights (``--oof``, one per probability file, in
order: an ``oof.csv`` file, or a registered run or experiment, whose ``oof.csv`` files are used;
an id several members predict gets their weighted mean, as ``predict``'s ensemble thresholds
do), against the labels of the members' dataset (``--dataset`` for plain files). ``blend`` of
the files that ``predict --probs`` wrote for runs A and B equals ``predict --run A --run B``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpatool._io import path_problem
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import NUM_CLASSES
from hpatool.registry import Registry


@dataclass
class BlendResult:
    files: list[Path]
    weights: list[float]  # normalised
    ids: list[str]
    probs: np.ndarray  # (n, 28) the blend
    thresholds: np.ndarray
    threshold_text: str  # how the thresholds were set
    out: Path
    probs_out: Path | None
    label_counts: dict[int, int] = field(default_factory=dict)
    oof_samples: int = 0  # out-of-fold samples the thresholds were tuned on (auto)

    def to_json(self) -> dict[str, object]:
        return {
            "files": [str(f) for f in self.files],
            "weights": self.weights,
            "samples": len(self.ids),
            "thresholds": self.thresholds.tolist(),
            "threshold": self.threshold_text,
            "oof_samples": self.oof_samples,
            "submission": str(self.out),
            "probs": None if self.probs_out is None else str(self.probs_out),
            "label_counts": {str(k): v for k, v in self.label_counts.items()},
        }


def read_probability_file(path: Path) -> tuple[list[str], np.ndarray]:
    """A ``predict --probs`` file's Ids and ``(n, 28)`` probabilities (checked as ``oof.csv``
    files are: header, 28 probabilities in [0, 1] a row, no Id twice)."""
    from hpatool.engine.runs.oof import read_oof

    if not path.is_file():
        raise NotFound(f"{path}: {path_problem(path)} (a probability file of 'predict --probs')")
    return read_oof(path, "a probability file", "'hpatool predict --probs'")


def blend_weights(weights: Sequence[float], n: int) -> list[float]:
    """``--weight`` values for ``n`` files, normalised (none given: equal)."""
    if not weights:
        return [1.0 / n] * n
    if len(weights) != n:
        raise UsageError(f"{len(weights)} --weight values for {n} files; give one per file")
    bad = next((w for w in weights if not (w > 0 and math.isfinite(w))), None)
    if bad is not None:
        raise UsageError(f"--weight {bad} is not a positive number")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def blend_files(files: Sequence[Path], weights: list[float]) -> tuple[list[str], np.ndarray]:
    """The files' weighted mean, in the first file's Id order; files with other Ids are an
    error naming the file and an Id."""
    ids, first = read_probability_file(files[0])
    order = {sid: i for i, sid in enumerate(ids)}
    parts = [first]
    for path in files[1:]:
        other_ids, probs = read_probability_file(path)
        missing = [sid for sid in ids if sid not in set(other_ids)]
        extra = [sid for sid in other_ids if sid not in order]
        if missing or extra:
            sample = (missing or extra)[0]
            raise DataError(
                f"{path}: its Ids differ from {files[0]}'s ({len(missing):,} missing, "
                f"{len(extra):,} extra; the first: {sample!r}); blend files of the same dataset"
            )
        index = np.asarray([order[sid] for sid in other_ids])
        aligned = np.empty_like(probs)
        aligned[index] = probs
        parts.append(aligned)
    if len(set(weights)) == 1:
        return ids, np.mean(parts, axis=0)
    return ids, np.average(parts, axis=0, weights=weights)


def oof_thresholds(
    reg: Registry, sources: Sequence[str], weights: list[float], dataset: str | None
) -> tuple[np.ndarray, int]:
    """Thresholds tuned on the members' out-of-fold predictions, blended with ``weights``;
    and how many samples they were tuned on."""
    from hpatool.engine.metrics import tune_thresholds
    from hpatool.engine.runs.oof import mean_prediction
    from hpatool.labels import to_multihot

    parts: dict[str, list[tuple[float, np.ndarray]]] = {}
    datasets: set[str] = set()
    for source, weight in zip(sources, weights, strict=True):
        for path, ds in _oof_files(reg, source):
            if ds is not None:
                datasets.add(ds)
            ids, probs = _read_member_oof(path)
            for sid, row in zip(ids, probs, strict=True):
                parts.setdefault(sid, []).append((weight, row))
    name = dataset or (next(iter(datasets)) if len(datasets) == 1 else None)
    if name is None:
        raise UsageError(
            "give --dataset NAME: the registered dataset whose labels the --oof predictions "
            "are scored against"
            + (f" (the members validate on {', '.join(sorted(datasets))})" if datasets else "")
        )
    labelled = {s.id: s.target for s in reg.samples(name) if s.target is not None}
    unknown = [sid for sid in parts if sid not in labelled]
    if unknown:
        raise DataError(
            f"--oof: id {unknown[0]!r} is not a labelled sample of dataset {name!r} "
            f"({len(unknown):,} such ids); give the dataset the predictions are of (--dataset)"
        )
    ordered = [sid for sid in labelled if sid in parts]  # dataset order, as summarize_oof
    probs = np.stack([mean_prediction(parts[sid]) for sid in ordered])
    y_true = to_multihot([labelled[sid] for sid in ordered])
    return tune_thresholds(y_true, probs), len(ordered)


def _oof_files(reg: Registry, source: str) -> list[tuple[Path, str | None]]:
    """The ``oof.csv`` files of ``--oof SOURCE``: a file, or a registered run's or
    experiment's (with the dataset they validate on)."""
    path = Path(source).expanduser()
    if path.is_file():
        return [(path, None)]
    if reg.has_experiment(source):
        runs = reg.experiment_runs(source)
    elif reg.has_run(source):
        runs = [reg.run(source)]
    else:
        problem = path_problem(path)
        problem = "no such file, run or experiment" if problem == "no such file" else problem
        raise NotFound(
            f"--oof {source}: {problem} (give an oof.csv file, a run or an experiment of the "
            "registry)"
        )
    from hpatool.engine.runs.oof import OOF_FILE

    files = [(r.out_dir / OOF_FILE, r.datasets[0] if r.datasets else None) for r in runs]
    missing = [str(p) for p, _ in files if not p.is_file()]
    if missing:
        raise NotFound(f"--oof {source}: {missing[0]} is missing (the run has not finished)")
    return files


def _read_member_oof(path: Path) -> tuple[list[str], np.ndarray]:
    from hpatool.engine.runs.oof import read_oof

    return read_oof(path)


def apply_labels(probs: np.ndarray, thresholds: np.ndarray, min_labels: int) -> list[list[int]]:
    """Each row's classes at or above their threshold, topped up to ``min_labels``."""
    from hpatool.engine.scoring.score import decide_labels

    assert probs.shape[1] == NUM_CLASSES
    return [decide_labels(row, thresholds, min_labels) for row in probs]


def blend(
    reg: Registry,
    files: Sequence[Path],
    *,
    out: Path,
    weights: Sequence[float] = (),
    oof: Sequence[str] = (),
    dataset: str | None = None,
    threshold: str = "auto",
    min_labels: int | None = None,
    probs_out: Path | None = None,
) -> BlendResult:
    """Blend ``files`` and write the submission ``out`` (and the blend to ``probs_out``); see
    the module docstring. ``min_labels``: the at-least-N-labels top-up (``None``: 1, or 0
    with prior matching, which refuses another)."""
    from hpatool.engine.scoring.predict_files import write_probabilities, write_submission
    from hpatool.outputs import check_output

    if not files:
        raise UsageError("give at least one probability file (written by 'predict --probs')")
    paths = [Path(f).expanduser() for f in files]
    inputs = [(p, "an input probability file") for p in paths]
    out = check_output(out, "--out", reg, inputs)
    if probs_out is not None:
        probs_out = check_output(probs_out, "--probs", reg, inputs)
        if probs_out.resolve() == out.resolve():
            raise UsageError(f"--probs {probs_out} is the --out file; give it another name")
    w = blend_weights(list(weights), len(paths))
    thresholds, text, tuned_on = _thresholds(reg, threshold, oof, w, dataset, len(paths))
    if thresholds is None and min_labels:
        raise UsageError(
            f"--min-labels {min_labels} would add labels beyond the class shares --threshold "
            f"{threshold} matches; leave it out (the top-up is off in this mode)"
        )
    top_up = (0 if thresholds is None else 1) if min_labels is None else min_labels
    ids, probs = blend_files(paths, w)
    if thresholds is None:  # prior=FILE.csv: on the blend itself
        from hpatool.engine.parsing import parse_prior
        from hpatool.engine.scoring.prior import match_prior

        spec = parse_prior(threshold)
        assert isinstance(spec, Path)
        thresholds = match_prior(spec, probs, np.full(NUM_CLASSES, 0.5), None).thresholds
    labels = apply_labels(probs, thresholds, top_up)
    counts: dict[int, int] = {}
    for lab in labels:
        for c in lab:
            counts[c] = counts.get(c, 0) + 1
    write_submission(out, ids, labels)
    if probs_out is not None:
        write_probabilities(probs_out, ids, list(probs))
    return BlendResult(
        paths, w, ids, probs, thresholds, text, out, probs_out, dict(sorted(counts.items())),
        tuned_on,
    )  # fmt: skip


def _thresholds(
    reg: Registry,
    threshold: str,
    oof: Sequence[str],
    weights: list[float],
    dataset: str | None,
    n: int,
) -> tuple[np.ndarray | None, str, int]:
    """``(thresholds, or None for prior matching; how they were set; OOF samples tuned on)``;
    every input checked before the blend is written."""
    from hpatool.engine.config import parse_threshold, threshold_file
    from hpatool.engine.parsing import parse_prior, read_shares, read_thresholds_file

    prior = parse_prior(threshold)
    if prior is not None:
        if not isinstance(prior, Path):
            raise UsageError(
                "blend has no training data to take class shares from: give "
                "--threshold prior=FILE.csv (columns class, share)"
            )
        read_shares(prior)
        return None, f"matched to the class shares of {prior}", 0
    value = parse_threshold(threshold)
    if value is not None:
        return np.full(NUM_CLASSES, value), f"{value:g} for every class", 0
    file = threshold_file(threshold)
    from_file = read_thresholds_file(file) if file is not None else None
    if from_file is not None and not np.isnan(from_file).any():
        return from_file, f"from {file}", 0
    if not oof:
        raise UsageError(
            "--threshold auto tunes the thresholds on out-of-fold predictions: give --oof "
            "(an oof.csv, a run or an experiment) once per probability file, or --threshold "
            "with a number or a CSV of per-class thresholds"
        )
    if len(oof) != n:
        raise UsageError(f"{len(oof)} --oof values for {n} probability files; give one per file")
    tuned, samples = oof_thresholds(reg, oof, weights, dataset)
    if from_file is not None:
        merged = np.where(np.isnan(from_file), tuned, from_file)
        return merged, f"from {file}, the others tuned", samples
    return tuned, f"tuned on {samples:,} out-of-fold samples", samples
