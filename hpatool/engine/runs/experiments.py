"""Experiments: the fold runs of one dataset's split, and what is checked and reported of them.

``train --experiment EXP`` adds one fold run (``check_experiment_run`` refuses another
dataset or a fold the experiment already has; ``ensure_experiment`` creates the experiment
with the run's registration; ``fold_run_name`` names fold k's run ``EXP-f<k>``;
``experiment_options`` is what the experiment stores of its first run's options).
``experiment_report`` puts an experiment's folds and out-of-fold predictions together
(``engine.runs.oof.summarize_oof``) for ``experiments show``; ``oof_json`` is the out-of-fold part
of its JSON and of ``cv``'s.

``cv``'s plan and fold loop are in ``engine.training.cv``; ``runs import`` is
``engine.runs.run_import``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool.engine.config import IDENTITY_KEYS, TrainConfig, flag, with_legacy
from hpatool.errors import NotFound, UsageError
from hpatool.registry import Registry, RunRecord

if TYPE_CHECKING:
    from hpatool.engine.metrics import ClassReport
    from hpatool.engine.runs.oof import OofSummary

#: The options of a fold run that are its own, not its experiment's.
RUN_OWN_KEYS = ("name", "fold", "experiment", "max_steps")
#: The options that say what an experiment's models are: its fold runs (``cv`` or ``train
#: --experiment``) may not change them.
EXPERIMENT_KEYS = (
    *(k for k in IDENTITY_KEYS if k != "fold"),
    "epochs",
    "pretrained",
    "eval_crops",
    "eval_agg",
    "tta",
    "val_view",
    "head_bias",
)


def fold_run_name(experiment: str, fold: int) -> str:
    """The run of fold ``fold`` of experiment ``experiment``: ``EXP-f<fold>``."""
    return f"{experiment}-f{fold}"


def experiment_options(config: TrainConfig) -> dict[str, Any]:
    """What an experiment stores of its first run's options: all but the run's own; ``out``
    made absolute (against the current directory), so a later fold from elsewhere writes to
    the same folder."""
    options = {k: v for k, v in config.to_json().items() if k not in RUN_OWN_KEYS}
    if options.get("out") is not None:
        options["out"] = str(Path(options["out"]).expanduser().resolve())
    return options


def same_option(key: str, given: Any, stored: Any) -> bool:
    """Whether option ``key`` given as ``given`` is the experiment's ``stored`` value."""
    if key == "arch":
        from hpatool.engine.models.factory import resolve_arch

        return bool(resolve_arch(str(given)) == resolve_arch(str(stored)))
    if key == "datasets":
        return list(given) == list(stored or [])
    if isinstance(given, float) or isinstance(stored, float):
        try:
            return float(given) == float(stored)
        except (TypeError, ValueError):
            return False
    return bool(given == stored)


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def option_conflict(
    given: Mapping[str, Any], stored: Mapping[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first of ``EXPERIMENT_KEYS`` that ``given`` and an experiment's ``stored`` options
    both have with other values, as ``(key, given value, stored value)``; ``None`` if none.
    The one comparison of ``cv`` and ``train --experiment``."""
    stored = with_legacy(stored)
    for key in EXPERIMENT_KEYS:
        if key in given and key in stored and not same_option(key, given[key], stored[key]):
            return key, given[key], stored[key]
    return None


def conflict_text(key: str, value: Any, was: Any, experiment: str) -> str:
    """``--KEY VALUE differs from the WAS of experiment 'EXP'``."""
    return (
        f"{flag(key)} {_shown(value)} differs from the {_shown(was)} of experiment {experiment!r}"
    )


# ------------------------------------------------------------------- train --experiment


def check_experiment_run(reg: Registry, config: TrainConfig, name: str) -> None:
    """Refuse run ``name`` of ``config.experiment`` when the experiment validates on another
    dataset, another of its runs already has the run's fold, or (for a run new to the
    experiment) the run's options differ from those of the experiment's other runs
    (``option_conflict``). An experiment with no runs yet takes the run's options
    (``ensure_experiment``)."""
    experiment = config.experiment
    if experiment is None or not reg.has_experiment(experiment):
        return
    record = reg.experiment(experiment)
    runs = reg.experiment_runs(experiment)
    if not any(r.name != name for r in runs):
        return  # no other runs: the experiment takes this one's dataset and options
    first = config.datasets[0] if config.datasets else None
    if record.dataset and first != record.dataset:
        raise UsageError(
            f"experiment {experiment!r} holds folds of dataset {record.dataset!r}, not "
            f"{first!r}; give --dataset {record.dataset} first, or another --experiment"
        )
    for run in runs:
        if run.fold == config.fold and run.name != name:
            raise UsageError(
                f"experiment {experiment!r} already has fold {config.fold}: run {run.name!r}; "
                f"choose another --fold, or remove that run first ('hpatool runs remove "
                f"{run.name}')"
            )
    if any(r.name == name for r in runs):
        return  # already one of its runs (resumed): its own options stand
    conflict = option_conflict(config.to_json(), record.options)
    if conflict is not None:
        key, value, was = conflict
        again = (
            " ".join(f"{flag(key)} {v}" for v in was)
            if isinstance(was, list)
            else f"{flag(key)} {was}"
        )
        raise UsageError(
            f"{conflict_text(key, value, was, experiment)}; give {again}, as the "
            "experiment's other folds, or another --experiment"
        )


def ensure_experiment(reg: Registry, config: TrainConfig) -> None:
    """Create ``config.experiment`` (its datasets and options from ``config``) if it is new,
    or has no runs yet (one left by a command that failed before its first run registered:
    it takes this run's options); call inside the transaction that registers the run."""
    name = config.experiment
    if name is None:
        return
    with reg.transaction():
        if reg.has_experiment(name):
            if reg.experiment(name).runs:
                return
            reg.delete_experiment(name)
        reg.create_experiment(name, datasets=config.datasets, options=experiment_options(config))


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
    #: runs whose oof.csv holds ids of another fold of the current split than the run's fold
    #: (trained on another split, e.g. imported): their predictions are not out-of-fold here
    not_out_of_fold: list[str] = field(default_factory=list)
    #: run -> {option: (the run's value, the experiment's)} for folds trained differently
    #: (a fold extended with 'train --resume --epochs', say): ``trained_differently``
    differs: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)

    @property
    def folds_missing(self) -> list[int]:
        have = {r.fold for r in self.runs}
        return [k for k in range(self.split_folds or 0) if k not in have]

    def to_json(self) -> dict[str, Any]:
        from hpatool.engine.runs.oof import OOF_FILE

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
        doc["not_out_of_fold"] = list(self.not_out_of_fold)
        doc["trained_differently"] = {
            run: {k: {"run": a, "experiment": b} for k, (a, b) in keys.items()}
            for run, keys in self.differs.items()
        }
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
        not_out_of_fold=not_out_of_fold(reg, record.dataset, runs),
        differs=trained_differently(record.options, runs),
    )


def trained_differently(
    stored: Mapping[str, Any], runs: list[RunRecord]
) -> dict[str, dict[str, tuple[Any, Any]]]:
    """The runs whose recorded options differ from their experiment's ``stored`` ones in an
    ``EXPERIMENT_KEYS`` option (``epochs`` after a fold was resumed with more, say): run ->
    {option: (the run's value, the experiment's)}. Runs that record no options are skipped."""
    expected = with_legacy(stored)
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for run in runs:
        options = run.config.get("options") if isinstance(run.config, dict) else None
        if not isinstance(options, dict):
            continue
        mine = with_legacy(options)
        keys = {
            key: (mine[key], expected[key])
            for key in EXPERIMENT_KEYS
            if key in mine and key in expected and not same_option(key, mine[key], expected[key])
        }
        if keys:
            out[run.name] = keys
    return out


def not_out_of_fold(reg: Registry, dataset: str, runs: list[RunRecord]) -> list[str]:
    """The runs whose ``oof.csv`` holds an id that the registry's current split of ``dataset``
    puts in another fold than the run's: trained on another split (``runs import``), their
    predictions are not out-of-fold for this one. Runs without an ``oof.csv`` or a fold, or
    a dataset without a split, name none."""
    from hpatool.engine.runs.oof import OOF_FILE, read_oof

    if not reg.has_dataset(dataset) or reg.split_info(dataset) is None:
        return []
    folds = reg.folds(dataset)
    names = []
    for run in runs:
        path = run.out_dir / OOF_FILE
        if run.fold is None or not path.is_file():
            continue
        ids, _ = read_oof(path)
        if any(folds.get(i) != run.fold for i in ids):
            names.append(run.name)
    return names


def oof_or_note(reg: Registry, runs: list[RunRecord]) -> tuple[OofSummary | None, str | None]:
    """The OOF summary of ``runs``, or why there is none (no runs, no ``oof.csv`` yet)."""
    from hpatool.engine.runs.oof import summarize_oof

    if not runs:
        return None, "no runs yet"
    try:
        return summarize_oof(reg, runs), None
    except NotFound:
        return None, "no OOF predictions yet (no run has an oof.csv)"


def oof_json(oof: OofSummary | None) -> dict[str, Any]:
    """The out-of-fold part of ``cv``'s and ``experiments show``'s JSON: the held-out figure
    (``oof_macro_f1_heldout``, ``heldout_thresholds`` by fold, ``heldout_classes``; ``null``
    with one fold) and the in-sample one (``oof_macro_f1``, ``thresholds``, ``classes``)."""
    if oof is None:
        return {
            "oof_samples": 0,
            "oof_macro_f1": None,
            "oof_macro_f1_heldout": None,
            "heldout_thresholds": None,
            "thresholds": None,
        }
    held = oof.heldout_thresholds
    return {
        "oof_samples": len(oof.ids),
        "dataset_samples": oof.dataset_samples,
        "oof_macro_f1_heldout": (
            None if oof.heldout_macro_f1 is None else float(oof.heldout_macro_f1)
        ),
        "heldout_thresholds": (
            None if held is None else {str(k): [float(t) for t in held[k]] for k in sorted(held)}
        ),
        "heldout_classes": (
            None if oof.heldout_classes is None else _classes_json(oof.heldout_classes)
        ),
        "oof_macro_f1": float(oof.macro_f1),  # in sample: thresholds tuned on what it scores
        "oof_macro_f1_in_sample": float(oof.macro_f1),
        "thresholds": [float(t) for t in oof.thresholds],
        "classes": _classes_json(oof.classes),
        "folds": oof.fold_list,
        **({} if held is not None else {"heldout_note": HELDOUT_NOTE}),
        "views": {name: view.to_json() for name, view in oof.views.items()},
        "without_oof": oof.without_oof,
    }


#: Why an experiment has no held-out figure.
HELDOUT_NOTE = (
    "no held-out figure: the out-of-fold predictions come from one fold, and thresholds "
    "tuned on other folds are needed to score it"
)


def _classes_json(classes: list[ClassReport]) -> list[dict[str, Any]]:
    return [
        {
            "class": c.index,
            "name": c.name,
            "precision": float(c.precision),
            "recall": float(c.recall),
            "f1": float(c.f1),
            "support": int(c.support),
        }
        for c in classes
    ]
