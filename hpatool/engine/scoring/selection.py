"""Which samples ``predict`` and ``evaluate`` score, decided before any scoring.

- ``evaluate``'s labelled samples: the fold (``--fold``, else the run's validation fold when the
  dataset is the run's first) and, on the run's own validation dataset and fold, the run's
  ``--limit`` (the same first N samples it validated on);
- the samples that can be scored (``hpatool.availability``: registry status and the four files
  there; then ``scoring.check_images``: every header readable and not smaller than the crop),
  and the others counted by reason, for one ``warning:`` line (``LeftOut``);
- how many of the evaluated samples the run trained on (``TrainedOn``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpatool.engine.config import PredictConfig
from hpatool.engine.distributed import env_rank
from hpatool.engine.scoring.model_source import TrainingData, training_ids, validation_fold
from hpatool.engine.scoring.score import CheckedImages, ScoreItem
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.registry import Registry, Sample


class LeftOut(UserWarning):
    """Samples left out of scoring because their images are not there or cannot be read (the
    CLI shows it as one ``warning:`` line)."""


class TrainedOn(UserWarning):
    """Evaluated samples that the run trained on: its scores on them are optimistic."""


class ViewMismatch(UserWarning):
    """The images are scored with another view than the one the thresholds were tuned on."""


class SizeDiffers(UserWarning):
    """A model scores images of another size than those it trained on (cells at another
    scale), or a view option cannot apply to a whole-image model (``--crops`` of one window)."""


class FrequencyDrift(UserWarning):
    """A class's predicted frequency is far from its frequency in the training data."""


def warn_once(message: str, category: type[Warning]) -> None:
    """One warning, from rank 0 only under torchrun (every rank makes the same decision)."""
    if env_rank()[0] == 0:
        warnings.warn(message, category, stacklevel=3)


@dataclass
class Candidates:
    """The samples to score (by dataset position) and those left out before scoring."""

    dataset: str
    where: str  # how messages name the samples: "'syn'", "'syn' fold 0"
    total: int  # the samples considered, before any was left out
    items: list[ScoreItem]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count
    left: dict[int, str] = field(default_factory=dict)  # position -> id, of those left out
    errors: dict[int, str] = field(default_factory=dict)  # position -> why, where known

    def add(self, reason: str, item: ScoreItem, error: str | None = None) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1
        self.left[item.index] = item.id
        if error:
            self.errors[item.index] = error

    def apply(self, checked: CheckedImages) -> None:
        """Leave out the images ``scoring.check_images`` found unusable."""
        kept = {t.index for t in checked.items}
        for t in self.items:
            if t.index not in kept:
                self.left[t.index] = t.id
        self.errors.update(checked.errors)
        for reason, n in checked.left_out.items():
            self.left_out[reason] = self.left_out.get(reason, 0) + n
        self.items = list(checked.items)

    @property
    def n_left_out(self) -> int:
        return sum(self.left_out.values())

    def summary(self) -> str:
        """``3 of 20 samples of 'syn' fold 0 left out (2 without all four image files, 1 unreadable
        image; first: <id or error>)``, or ``''``."""
        if not self.left_out:
            return ""
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(self.left_out.items()))
        first = min(self.left)
        example = self.errors.get(first, self.left[first])
        return (
            f"{self.n_left_out:,} of {self.total:,} samples of {self.where} left out "
            f"({reasons}; first: {example})"
        )

    def require_some(self) -> None:
        """A ``DataError`` when every sample was left out."""
        if not self.items:
            raise DataError(
                f"none of the samples can be scored: {self.summary()}; run "
                f"'hpatool datasets verify {self.dataset}' to see which files are missing"
            )


def available(
    reg: Registry, dataset: str, samples: Sequence[tuple[int, Sample]], where: str
) -> Candidates:
    """The samples (position, sample) whose images are there (``usable_samples``: registry
    status and one ``stat`` per file), and the others by reason."""
    from hpatool.availability import usable_samples

    root = reg.dataset(dataset).image_root()  # a dataset without images fails here
    usable = usable_samples(reg, dataset, [s for _, s in samples])
    ok = {s.id for s in usable.samples}
    cands = Candidates(
        dataset,
        where,
        len(samples),
        [ScoreItem(i, root, s.id) for i, s in samples if s.id in ok],
        left_out=dict(usable.left_out),
        left={i: s.id for i, s in samples if s.id not in ok},
    )
    cands.require_some()
    return cands


@dataclass(frozen=True)
class EvaluationSamples:
    fold: int | None
    limit: int | None  # the run's --limit, when applied
    labelled: list[tuple[int, Sample]]  # (dataset position, sample)

    def where(self, dataset: str) -> str:
        return repr(dataset) + (f" fold {self.fold}" if self.fold is not None else "")


def evaluation_samples(
    reg: Registry,
    config: PredictConfig,
    trained: TrainingData | None,
    runs: Sequence[str] | None = None,
) -> EvaluationSamples:
    """The fold to evaluate (``config.fold``, else the model's validation fold when the dataset
    is its first, else none; an ensemble has none), the run's ``--limit`` when the dataset and
    fold are the ones the run validated on, and the labelled samples, by dataset position.
    ``runs``: the models' runs (default ``config.run``; an experiment's runs)."""
    dataset = str(config.dataset)
    reg.dataset(dataset)  # an unknown name fails here, before anything else
    fold = config.fold
    if fold is None:
        checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
        names = list(config.run) if runs is None else list(runs)
        run = names[0] if len(names) == 1 else None  # an ensemble has no one fold
        if run is not None or checkpoint is not None:
            fold = validation_fold(reg, dataset, run, checkpoint)
    samples = reg.samples(dataset)
    limit = None
    if (
        trained is not None
        and trained.limit is not None
        and trained.datasets[:1] == (dataset,)
        and fold == trained.fold
    ):
        limit = trained.limit
        samples = samples[:limit]
    keep = {s.id for s in samples}
    if fold is not None:
        info = reg.split_info(dataset)
        if info is None:
            raise UsageError(
                f"dataset {dataset!r} has no folds; run 'hpatool split {dataset}' "
                "or leave out --fold"
            )
        if not 0 <= fold < int(info["folds"]):
            raise NotFound(
                f"fold {fold} does not exist: dataset {dataset!r} has "
                f"{info['folds']} folds (0 to {int(info['folds']) - 1})"
            )
        folds = reg.folds(dataset)
        keep = {s.id for s in samples if folds.get(s.id) == fold}
    labelled = [(i, s) for i, s in enumerate(samples) if s.id in keep and s.target is not None]
    if not labelled:
        raise UsageError(
            f"dataset {dataset!r} has no labelled samples"
            + (f" in fold {fold}" if fold is not None else "")
            + (f" among the first {limit} (the run's --limit)" if limit is not None else "")
            + "; evaluate needs a dataset with a Target column"
        )
    return EvaluationSamples(fold, limit, labelled)


def trained_on(reg: Registry, trained: TrainingData | None, items: Sequence[ScoreItem]) -> int:
    """How many of ``items`` were in the run's training set (by sample id)."""
    if trained is None or not items:
        return 0
    ids = training_ids(reg, trained)
    return sum(1 for t in items if t.id in ids)


def trained_on_any(
    reg: Registry, trained: Sequence[TrainingData], items: Sequence[ScoreItem]
) -> int:
    """How many of ``items`` were in the training set of at least one of the models."""
    if not trained or not items:
        return 0
    ids: set[str] = set()
    for data in trained:
        ids |= training_ids(reg, data)
    return sum(1 for t in items if t.id in ids)


def warn_trained_on(n: int, total: int, trained: TrainingData | None) -> None:
    if n and trained is not None:
        warn_once(
            f"{n} of the {total} evaluated samples were in run {trained.run}'s training set: "
            "its scores are optimistic",
            TrainedOn,
        )


def warn_ensemble_trained_on(n: int, total: int, models: int) -> None:
    if n:
        warn_once(
            f"{n} of the {total} evaluated samples were in the training set of at least one of "
            f"the ensemble's {models} models: its scores are optimistic (an experiment's fold "
            "runs are scored out of fold by 'hpatool experiments show')",
            TrainedOn,
        )
