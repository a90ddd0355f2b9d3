"""Where the scoring models come from: ``--run RUN`` (its best checkpoint, else its last;
repeated, an ensemble), ``--experiment EXP`` (its runs, an ensemble) or ``--checkpoint PATH``;
the view each was tuned on (``thresholds.json``'s ``view``); the per-class thresholds that go
with them (one run: its ``thresholds.json``; an ensemble: tuned on the runs' out-of-fold
predictions together); the training class frequencies; and the fold a model was validated on
(what ``evaluate`` scores by default)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import path_problem
from hpatool.engine.config import PredictConfig, parse_threshold
from hpatool.engine.runs.run_dir import BEST, CONFIG_FILE, LAST, THRESHOLDS_FILE
from hpatool.engine.views import View
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import NUM_CLASSES
from hpatool.registry import Registry


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a checkpoint file and, if known, its run and thresholds."""

    checkpoint: Path
    run: str | None
    thresholds_file: Path | None
    #: its share of an ensemble's probabilities (the weights sum to 1; one model: 1)
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The run's name, else the checkpoint file."""
        return self.run if self.run is not None else str(self.checkpoint)

    def thresholds_doc(self) -> dict[str, Any]:
        """``thresholds.json`` beside the checkpoint (``{}`` if there is none). One that cannot
        be read is a ``DataError``: falling back to the checkpoint's own thresholds, tuned on
        another view, would change the submission without a word."""
        if self.thresholds_file is None:
            return {}
        try:
            doc = json.loads(self.thresholds_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            why = " ".join(str(exc).split())[:120]
            raise DataError(
                f"{self.thresholds_file}: unreadable thresholds ({why}); restore the file, or "
                "pass --threshold with a number or a CSV of per-class thresholds"
            ) from None
        if not isinstance(doc, dict):
            raise DataError(
                f"{self.thresholds_file}: not a thresholds file (a JSON {type(doc).__name__}, "
                "not an object); restore it, or pass --threshold with a number or a CSV"
            )
        return doc

    def tuned_view(self) -> View | None:
        """The view ``thresholds.json``'s thresholds were tuned on, when they were tuned on
        the out-of-fold predictions (``"tuned_on": "oof"``); else ``None``."""
        doc = self.thresholds_doc()
        return View.from_json(doc.get("view")) if doc.get("tuned_on") == "oof" else None

    def stored_view(self) -> View | None:
        """The run's view (``thresholds.json``'s ``view``, else its ``config.json`` options:
        ``--crop``, ``--eval-crops``, ``--eval-agg``, ``--tta``); ``None`` if neither says."""
        from hpatool.engine.runs.run_dir import run_view

        return run_view(self.checkpoint.parent)

    def class_frequency(self) -> np.ndarray | None:
        """``config.json``'s ``class_frequency`` (share of the training samples with each
        class), or ``None`` (an older run, a checkpoint on its own)."""
        try:
            doc = json.loads((self.checkpoint.parent / CONFIG_FILE).read_text("utf-8"))
            arr = np.asarray([float(v) for v in doc["class_frequency"]], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return arr if arr.shape == (NUM_CLASSES,) else None


def resolve_sources(reg: Registry, config: PredictConfig) -> list[ModelSource]:
    """The models of ``--run`` and ``--experiment`` (each repeatable: an ensemble, weighted by
    ``ensemble_members``) or of ``--checkpoint`` (``PredictConfig.validate``)."""
    if config.checkpoint is not None:
        return [resolve_source(reg, None, Path(config.checkpoint))]
    return [
        dataclasses.replace(resolve_source(reg, name, None), weight=weight)
        for name, weight in ensemble_members(reg, config)
    ]


def parse_member(text: str, flag: str) -> tuple[str, float | None]:
    """``RUN`` or ``RUN:WEIGHT`` (``EXP:WEIGHT``): the name and the weight, if given (a
    positive finite number)."""
    name, sep, weight = str(text).rpartition(":")
    if not sep:
        return str(text), None
    try:
        value = float(weight)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(
            f"{flag} {text}: weight {weight!r} is not a positive number; write {flag} NAME or "
            f"{flag} NAME:WEIGHT (e.g. {name or 'NAME'}:2)"
        )
    return name, value


def ensemble_members(reg: Registry, config: PredictConfig) -> list[tuple[str, float]]:
    """The runs that score, with their weights summing to 1: each ``--run`` (``RUN`` or
    ``RUN:WEIGHT``) and every run of each ``--experiment`` (``EXP`` or ``EXP:WEIGHT``: the
    experiment's weight split equally among its runs); weights left out are 1, or come from
    ``--weight`` (one per ``--run``, or one per ``--experiment``, in order). A run given twice
    (itself, or through an experiment) is refused."""
    runs = [parse_member(r, "--run") for r in config.run]
    exps = [parse_member(e, "--experiment") for e in config.experiment]
    if config.weight:
        runs, exps = _with_weight_option(config.weight, runs, exps)
    members: list[tuple[str, float]] = []
    for name, weight in runs:
        members.append((name, 1.0 if weight is None else weight))
    for name, weight in exps:
        names = experiment_run_names(reg, name)
        share = (1.0 if weight is None else weight) / len(names)
        members += [(run, share) for run in names]
    seen: set[str] = set()
    for name, _ in members:
        if name in seen:
            raise UsageError(
                f"run {name!r} is given twice (by --run, or as a run of an --experiment); give "
                "each model of an ensemble once"
            )
        seen.add(name)
    total = sum(w for _, w in members)
    return [(name, w / total) for name, w in members]


Member = tuple[str, float | None]


def _with_weight_option(
    weights: list[float], runs: list[Member], exps: list[Member]
) -> tuple[list[Member], list[Member]]:
    """``--weight W`` (repeated): one weight per ``--run``, or per ``--experiment``, in order."""
    if any(w is not None for _, w in (*runs, *exps)):
        raise UsageError("give the weights as --weight W or as NAME:WEIGHT, not both")
    if runs and exps:
        raise UsageError(
            "--weight with both --run and --experiment is ambiguous; write the weights as "
            "--run RUN:WEIGHT and --experiment EXP:WEIGHT"
        )
    members, flag = (runs, "--run") if runs else (exps, "--experiment")
    if len(weights) != len(members):
        raise UsageError(
            f"{len(weights)} --weight values for {len(members)} {flag} values; give one each"
        )
    bad = next((w for w in weights if not (w > 0 and math.isfinite(w))), None)
    if bad is not None:
        raise UsageError(f"--weight {bad} is not a positive number")
    weighted: list[Member] = [
        (name, float(w)) for (name, _), w in zip(members, weights, strict=True)
    ]
    return (weighted, exps) if runs else (runs, weighted)


def experiment_run_names(reg: Registry, experiment: str) -> list[str]:
    """The runs of ``--experiment`` (by fold, then name); ``NotFound`` for an unknown one or
    one without runs."""
    runs = reg.experiment_runs(experiment)
    if not runs:
        raise NotFound(
            f"experiment {experiment!r} has no runs yet; train one with 'hpatool cv' or "
            f"'hpatool train --experiment {experiment}'"
        )
    return [r.name for r in runs]


def resolve_source(reg: Registry, run: str | None, checkpoint: Path | None) -> ModelSource:
    """``--run RUN`` (its best checkpoint, else its last) or ``--checkpoint PATH``, not both."""
    if (run is None) == (checkpoint is None):
        raise UsageError("give exactly one of --run RUN or --checkpoint PATH")
    if run is not None:
        record = reg.run(run)
        for name in (BEST, LAST):
            path = record.out_dir / name
            if path.is_file():
                thresholds = record.out_dir / THRESHOLDS_FILE
                return ModelSource(path, run, thresholds if thresholds.is_file() else None)
        raise NotFound(
            f"run {run!r} has no checkpoint in {record.out_dir} (looked for {BEST} and "
            f"{LAST}); train it first or pass --checkpoint PATH"
        )
    assert checkpoint is not None
    if not checkpoint.is_file():
        problem = path_problem(checkpoint).replace("no such file", "no such checkpoint file")
        raise NotFound(f"{checkpoint}: {problem}")
    thresholds = checkpoint.parent / THRESHOLDS_FILE
    return ModelSource(checkpoint, None, thresholds if thresholds.is_file() else None)


def uses_oof_thresholds(source: ModelSource, ckpt: dict[str, Any]) -> bool:
    """Whether ``--threshold auto`` takes ``thresholds.json``'s OOF-view thresholds (``"tuned_on":
    "oof"``) for this checkpoint: the best one, or one of the same epoch."""
    doc = source.thresholds_doc()
    if doc.get("tuned_on") != "oof":
        return False
    epoch = ckpt.get("epoch")
    return source.checkpoint.name == BEST or (epoch is not None and epoch == doc.get("epoch"))


def resolve_thresholds(
    threshold: str | float, source: ModelSource, ckpt: dict[str, Any]
) -> np.ndarray:
    """Per-class thresholds: ``auto`` = the run's tuned ones, or one float for every class."""
    value = parse_threshold(threshold)
    if value is not None:
        return np.full(NUM_CLASSES, value)
    # Thresholds tuned on the run's out-of-fold predictions with its view (thresholds.json,
    # "tuned_on": "oof") come first for the best checkpoint they were made with. Otherwise the
    # checkpoint's own thresholds (tuned on the centre crop at the epoch it holds): thresholds.json
    # belongs to the best epoch, so it would be wrong for checkpoint-last.pt of a later epoch.
    values: Any = ckpt.get("thresholds")
    origin = str(source.checkpoint)
    if uses_oof_thresholds(source, ckpt):
        values = None
    if values is None and source.thresholds_file is not None:
        origin = str(source.thresholds_file)
        try:
            doc = json.loads(source.thresholds_file.read_text(encoding="utf-8"))
            values = doc["thresholds"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{source.thresholds_file}: unreadable thresholds ({exc})") from None
    return _checked_thresholds(values, origin, source)


def _checked_thresholds(values: Any, origin: str, source: ModelSource) -> np.ndarray:
    if values is None:
        raise UsageError(
            f"{source.checkpoint}: no tuned thresholds (none in the checkpoint, no "
            f"{THRESHOLDS_FILE} beside it); pass --threshold 0.5 or another number"
        )
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{origin}: thresholds are not numbers ({exc})") from None
    if arr.shape != (NUM_CLASSES,):
        raise DataError(f"{origin}: thresholds hold {arr.size} values, expected {NUM_CLASSES}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise DataError(
            f"{origin}: thresholds must lie in 0..1; pass --threshold 0.5 to use one number"
        )
    return arr


def with_threshold_file(threshold: str | float, tuned: np.ndarray) -> np.ndarray:
    """``--threshold FILE.csv``: the file's per-class thresholds over ``tuned`` (the classes
    it does not name keep theirs); any other ``--threshold``: ``tuned`` unchanged."""
    from hpatool.engine.config import threshold_file
    from hpatool.engine.parsing import read_thresholds_file

    file = threshold_file(threshold)
    if file is None:
        return tuned
    values = read_thresholds_file(file)
    return np.where(np.isnan(values), tuned, values)


class EnsembleThresholds(UserWarning):
    """An ensemble's thresholds could not be tuned on all its runs' out-of-fold predictions."""


def ensemble_thresholds(
    reg: Registry, threshold: str | float, sources: list[ModelSource], ckpts: list[dict[str, Any]]
) -> np.ndarray:
    """An ensemble's per-class thresholds: one number for every class, or (``auto``) those
    tuned on the runs' out-of-fold predictions together (``hpatool.engine.runs.oof.summarize_oof``;
    an id several runs predict gets the weighted mean, as the ensemble's probabilities do).
    When a run has no ``oof.csv`` (or a model is not a run): the mean of the models' own
    thresholds (``resolve_thresholds``), with one ``EnsembleThresholds`` warning."""
    import warnings

    from hpatool.engine.distributed import env_rank
    from hpatool.engine.runs.oof import OOF_FILE, summarize_oof

    value = parse_threshold(threshold)
    if value is not None:
        return np.full(NUM_CLASSES, value)
    records = [reg.run(s.run) for s in sources if s.run is not None]
    missing = [
        s.name for s in sources if s.run is None or not (s.checkpoint.parent / OOF_FILE).is_file()
    ]
    if not missing:
        weights = [s.weight for s in sources]
        return np.asarray(summarize_oof(reg, records, weights).thresholds, dtype=np.float64)
    mean = np.average(
        [resolve_thresholds(threshold, s, c) for s, c in zip(sources, ckpts, strict=True)],
        axis=0,
        weights=[s.weight for s in sources],
    )
    if env_rank()[0] == 0:
        warnings.warn(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no {OOF_FILE}: the "
            "ensemble uses the mean of its models' own thresholds, not thresholds tuned on "
            "out-of-fold predictions ('hpatool train --resume --name RUN' writes the file)",
            EnsembleThresholds,
            stacklevel=2,
        )
    return mean


@dataclass(frozen=True)
class TrainingData:
    """What a model was trained on, as its run recorded it: ``--dataset``s, ``--fold`` (the
    validation fold of the first dataset) and ``--limit`` (the first N samples of each)."""

    run: str  # the run's name, or the checkpoint file when the run is not named
    datasets: tuple[str, ...]
    fold: int | None
    limit: int | None


def training_data(reg: Registry, run: str | None, checkpoint: Path | None) -> TrainingData | None:
    """The training data of ``--run`` (from the registry) or of a ``--checkpoint`` (from the
    ``config.json`` beside it); ``None`` for a checkpoint on its own."""
    options: Any = None
    name = run
    if run is not None:
        record = reg.run(run)
        saved = record.config.get("options") if isinstance(record.config, dict) else None
        limit = saved.get("limit") if isinstance(saved, dict) else None
        options = {"datasets": list(record.datasets), "fold": record.fold, "limit": limit}
    elif checkpoint is not None:
        try:
            options = json.loads((checkpoint.parent / CONFIG_FILE).read_text("utf-8"))["options"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        name = options.get("name") if isinstance(options, dict) else None
        name = name if isinstance(name, str) and name else str(checkpoint)
    if not isinstance(options, dict) or name is None:
        return None
    datasets, fold, limit = options.get("datasets"), options.get("fold"), options.get("limit")
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        return None
    return TrainingData(
        run=name,
        datasets=tuple(datasets),
        fold=fold if isinstance(fold, int) else None,
        limit=limit if isinstance(limit, int) and limit > 0 else None,
    )


def validation_fold(
    reg: Registry, dataset: str, run: str | None, checkpoint: Path | None
) -> int | None:
    """The fold the model was validated on, when ``dataset`` is its first training dataset:
    from the registry for ``--run``, from the ``config.json`` beside a ``--checkpoint``."""
    data = training_data(reg, run, checkpoint)
    if data is not None and data.datasets and data.datasets[0] == dataset:
        return data.fold
    return None


def thresholds_tuned_on(reg: Registry, sources: list[ModelSource]) -> set[str]:
    """The ids of the samples whose predictions ``--threshold auto`` thresholds were tuned on:
    each model's ``oof.csv`` ids, else its validation fold (a run, or a checkpoint with a
    ``config.json`` beside it); empty when unknown."""
    from hpatool.engine.runs.oof import OOF_FILE, read_oof

    ids: set[str] = set()
    for source in sources:
        oof = source.checkpoint.parent / OOF_FILE
        if oof.is_file():
            try:
                ids.update(read_oof(oof)[0])
                continue
            except DataError:
                pass
        data = training_data(reg, source.run, None if source.run else source.checkpoint)
        if data is None or data.fold is None or not data.datasets:
            continue
        first = data.datasets[0]
        if not reg.has_dataset(first):
            continue
        folds = reg.folds(first)
        ids.update(s.id for s in reg.samples(first)[: data.limit] if folds.get(s.id) == data.fold)
    return ids


def training_ids(reg: Registry, data: TrainingData) -> set[str]:
    """The ids of the samples the run trained on, as ``hpatool.data.samples.train_val_items``
    chooses them: the labelled samples among the first ``limit`` of each dataset, except the
    validation fold of the first (and, in the others, the ids in it). Datasets removed since
    are skipped."""
    train: set[str] = set()
    val: set[str] = set()
    for k, name in enumerate(data.datasets):
        if not reg.has_dataset(name):
            continue
        samples = [s for s in reg.samples(name)[: data.limit] if s.target is not None]
        if k == 0 and data.fold is not None:
            folds = reg.folds(name)
            val = {s.id for s in samples if folds.get(s.id) == data.fold}
            train.update(s.id for s in samples if folds.get(s.id) is not None and s.id not in val)
        else:
            train.update(s.id for s in samples if s.id not in val)
    return train
