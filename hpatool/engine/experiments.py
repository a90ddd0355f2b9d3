"""Experiments: the fold runs of one dataset's split, and what is checked and reported of them.

``train --experiment EXP`` adds one fold run (``check_experiment_run`` refuses another
dataset or a fold the experiment already has; ``ensure_experiment`` creates the experiment
with the run's registration; ``fold_run_name`` names fold k's run ``EXP-f<k>``;
``experiment_options`` is what the experiment stores of its first run's options).
``experiment_report`` puts an experiment's folds and out-of-fold predictions together
(``engine.oof.summarize_oof``) for ``experiments show``; ``oof_json`` is the out-of-fold part
of its JSON and of ``cv``'s.

``cv``'s plan and fold loop are in ``engine.cv``; ``runs import`` is ``engine.run_import``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpatool.engine.config import TrainConfig
from hpatool.errors import NotFound, UsageError
from hpatool.registry import Registry, RunRecord

if TYPE_CHECKING:
    from hpatool.engine.oof import OofSummary

#: The options of a fold run that are its own, not its experiment's.
RUN_OWN_KEYS = ("name", "fold", "experiment", "max_steps")


def fold_run_name(experiment: str, fold: int) -> str:
    """The run of fold ``fold`` of experiment ``experiment``: ``EXP-f<fold>``."""
    return f"{experiment}-f{fold}"


def experiment_options(config: TrainConfig) -> dict[str, Any]:
    """What an experiment stores of its first run's options: all but the run's own."""
    return {k: v for k, v in config.to_json().items() if k not in RUN_OWN_KEYS}


# ------------------------------------------------------------------- train --experiment


def check_experiment_run(reg: Registry, config: TrainConfig, name: str) -> None:
    """Refuse run ``name`` of ``config.experiment`` when the experiment validates on another
    dataset, or another of its runs already has the run's fold."""
    experiment = config.experiment
    if experiment is None or not reg.has_experiment(experiment):
        return
    record = reg.experiment(experiment)
    first = config.datasets[0] if config.datasets else None
    if record.dataset and first != record.dataset:
        raise UsageError(
            f"experiment {experiment!r} holds folds of dataset {record.dataset!r}, not "
            f"{first!r}; give --dataset {record.dataset} first, or another --experiment"
        )
    for run in reg.experiment_runs(experiment):
        if run.fold == config.fold and run.name != name:
            raise UsageError(
                f"experiment {experiment!r} already has fold {config.fold}: run {run.name!r}; "
                f"choose another --fold, or remove that run first ('hpatool runs remove "
                f"{run.name}')"
            )


def ensure_experiment(reg: Registry, config: TrainConfig) -> None:
    """Create ``config.experiment`` (its datasets and options from ``config``) if it is new;
    call inside the transaction that registers the run."""
    if config.experiment is not None and not reg.has_experiment(config.experiment):
        reg.create_experiment(
            config.experiment, datasets=config.datasets, options=experiment_options(config)
        )


# -------------------------------------------------------------------- experiments show


@dataclass
class ExperimentReport:
    """An experiment as ``experiments show`` reports it."""

    name: str
    dataset: str
    datasets: list[str]
    created_at: str
    options: dict[str, Any]
    runs: list[RunRecord]
    split_folds: int | None
    oof: OofSummary | None = None
    oof_note: str | None = None

    @property
    def folds_missing(self) -> list[int]:
        have = {r.fold for r in self.runs}
        return [k for k in range(self.split_folds or 0) if k not in have]

    def to_json(self) -> dict[str, Any]:
        from hpatool.engine.oof import OOF_FILE

        doc: dict[str, Any] = {
            "name": self.name,
            "dataset": self.dataset,
            "datasets": self.datasets,
            "created_at": self.created_at,
            "options": self.options,
            "split_folds": self.split_folds,
            "folds_missing": self.folds_missing,
            "runs": [
                {
                    "name": r.name,
                    "fold": r.fold,
                    "status": r.status,
                    "best_epoch": r.best_epoch,
                    "best_f1": r.best_f1,
                    "epochs_done": r.epochs_done,
                    "oof": (r.out_dir / OOF_FILE).is_file(),
                    "out_dir": str(r.out_dir),
                }
                for r in self.runs
            ],
        }
        doc.update(oof_json(self.oof))
        if self.oof is None:
            doc["dataset_samples"] = None
        if self.oof_note:
            doc["oof_note"] = self.oof_note
        return doc


def experiment_report(reg: Registry, name: str) -> ExperimentReport:
    """Experiment ``name``'s folds and, where they have an ``oof.csv``, their OOF summary."""
    record = reg.experiment(name)
    runs = reg.experiment_runs(name)
    split = reg.split_info(record.dataset) if reg.has_dataset(record.dataset) else None
    oof, note = oof_or_note(reg, runs)
    return ExperimentReport(
        name=record.name,
        dataset=record.dataset,
        datasets=record.datasets,
        created_at=record.created_at,
        options=record.options,
        runs=runs,
        split_folds=int(split["folds"]) if split else None,
        oof=oof,
        oof_note=note,
    )


def oof_or_note(reg: Registry, runs: list[RunRecord]) -> tuple[OofSummary | None, str | None]:
    """The OOF summary of ``runs``, or why there is none (no runs, no ``oof.csv`` yet)."""
    from hpatool.engine.oof import summarize_oof

    if not runs:
        return None, "no runs yet"
    try:
        return summarize_oof(reg, runs), None
    except NotFound:
        return None, "no OOF predictions yet (no run has an oof.csv)"


def oof_json(oof: OofSummary | None) -> dict[str, Any]:
    """The out-of-fold part of ``cv``'s and ``experiments show``'s JSON."""
    if oof is None:
        return {"oof_samples": 0, "oof_macro_f1": None, "thresholds": None}
    return {
        "oof_samples": len(oof.ids),
        "dataset_samples": oof.dataset_samples,
        "oof_macro_f1": float(oof.macro_f1),
        "thresholds": [float(t) for t in oof.thresholds],
        "classes": [
            {
                "class": c.index,
                "name": c.name,
                "precision": float(c.precision),
                "recall": float(c.recall),
                "f1": float(c.f1),
                "support": int(c.support),
            }
            for c in oof.classes
        ],
        "views": oof.views,
        "without_oof": oof.without_oof,
    }
