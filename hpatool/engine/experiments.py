"""Experiments: the fold runs of one dataset's split, trained as a K-fold cross-validation.

``cross_validate`` (``hpatool cv``) trains fold k of the first dataset's split as run
``EXP-f<k>`` of experiment ``EXP``, one fold after another in this process (under torchrun
every rank runs the loop, sharing one process group: ``distributed.keep_process_group``). Run
again, it skips the folds whose runs are finished (``done`` or ``stopped``, with an
``oof.csv``), resumes the interrupted, failed or dead ones from their ``checkpoint-last.pt``
(or starts them again when they have none) and refuses one still running. The experiment
records its datasets and the options its runs start with: a rerun takes the options it does
not give from there, and refuses one that differs (``plan_cv``).

``train --experiment EXP`` adds one fold run (``check_experiment_run`` refuses another
dataset or a fold the experiment already has; ``ensure_experiment`` creates the experiment
with the run's registration). ``import_run`` (``runs import``) registers a run folder trained
elsewhere. ``experiment_report`` puts an experiment's folds and out-of-fold predictions
together (``engine.oof.summarize_oof``) for ``experiments show``.

The engine never prints: the CLI passes ``fold_progress`` for each fold's progress.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool.engine.config import IDENTITY_KEYS, TrainConfig, flag, train_config
from hpatool.engine.run_admin import process_gone
from hpatool.engine.run_dir import (
    CONFIG_FILE,
    LAST,
    METRICS_FILE,
    THRESHOLDS_FILE,
    best_row,
    read_metrics_csv,
)
from hpatool.errors import AlreadyExists, DataError, Interrupted, NotFound, UsageError
from hpatool.registry import Registry, RunRecord, check_name

if TYPE_CHECKING:
    from hpatool.engine.events import ProgressCallback
    from hpatool.engine.oof import OofSummary

#: The options of a fold run that are its own, not its experiment's.
RUN_OWN_KEYS = ("name", "fold", "experiment", "max_steps")
#: The options that say what an experiment's models are: a ``cv`` rerun may not change them.
EXPERIMENT_KEYS = (
    *(k for k in IDENTITY_KEYS if k != "fold"),
    "epochs",
    "pretrained",
    "eval_crops",
    "eval_agg",
    "tta",
)
#: A run in one of these states, with an ``oof.csv``, is a finished fold.
FINISHED = ("done", "stopped")


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


# ---------------------------------------------------------------------------------- cv


@dataclass
class FoldPlan:
    """What ``cv`` does with one fold: ``train`` (a new run), ``resume`` it or ``skip`` it
    (finished); ``record`` is its run's registry row, if it has one."""

    fold: int
    run: str
    action: str
    record: RunRecord | None = None
    why: str = ""  # for a resumed or restarted run: its state


@dataclass
class CvPlan:
    experiment: str
    dataset: str
    split_folds: int
    options: dict[str, Any]  # by TrainConfig name: the given ones over the experiment's
    folds: list[FoldPlan]
    new: bool  # the experiment is not in the registry yet

    def command(self, home: Path | None = None) -> str:
        """The command that goes on with this cross-validation."""
        where = ""
        if home is not None:
            from hpatool.registry import resolve_home

            if resolve_home(None).expanduser().resolve() != Path(home).expanduser().resolve():
                where = f" --home {home}"
        return f"hpatool{where} cv --name {self.experiment}"


def _same(key: str, given: Any, stored: Any) -> bool:
    if key == "arch":
        from hpatool.models import resolve_arch

        return bool(resolve_arch(str(given)) == resolve_arch(str(stored)))
    if key == "datasets":
        return list(given) == list(stored or [])
    if isinstance(given, float) or isinstance(stored, float):
        try:
            return float(given) == float(stored)
        except (TypeError, ValueError):
            return False
    return bool(given == stored)


def plan_cv(
    reg: Registry,
    given: Mapping[str, Any],
    *,
    name: str,
    folds: int | None = None,
    fold_list: list[int] | None = None,
) -> CvPlan:
    """What ``cv --name NAME`` with options ``given`` (by ``TrainConfig`` name, ``None`` = not
    given) does with each fold; every refusal comes here, before any training."""
    check_name(name, "experiment")
    if folds is not None and fold_list:
        raise UsageError("give --folds K (every fold) or --fold K (repeatable), not both")
    given = {k: v for k, v in given.items() if v is not None and k not in RUN_OWN_KEYS}
    if not given.get("datasets"):
        given.pop("datasets", None)
    stored = reg.experiment(name) if reg.has_experiment(name) else None
    if stored is not None:
        for key in EXPERIMENT_KEYS:
            if (
                key in given
                and key in stored.options
                and not _same(key, given[key], stored.options[key])
            ):
                value, was = given[key], stored.options[key]
                show = " ".join(map(str, value)) if isinstance(value, list) else value
                shown_was = " ".join(map(str, was)) if isinstance(was, list) else was
                raise UsageError(
                    f"{flag(key)} {show} differs from the {shown_was} of experiment {name!r}; "
                    "rerun with the same value (or leave it out), or start a new experiment "
                    "with another --name"
                )
        options = {**stored.options, "datasets": stored.datasets, **given}
    else:
        options = dict(given)
    if options.get("out") is not None:
        options["out"] = str(Path(options["out"]).expanduser().resolve())
    else:
        options["out"] = str(Path("runs").resolve())
    config = train_config({**options, "name": fold_run_name(name, 0), "experiment": name})
    config.validate()
    dataset = config.datasets[0]
    info = reg.split_info(dataset)
    if info is None:
        raise UsageError(
            f"dataset {dataset!r} has no split; run 'hpatool split {dataset} --folds K' first "
            "(cv trains one run per fold)"
        )
    split_folds = int(info["folds"])
    if folds is not None and folds != split_folds:
        raise UsageError(
            f"{dataset!r} is split into {split_folds} folds; run 'hpatool split {dataset} "
            f"--folds {folds} --force' or leave out --folds"
        )
    wanted = sorted(set(fold_list)) if fold_list else list(range(split_folds))
    bad = [k for k in wanted if not 0 <= k < split_folds]
    if bad:
        raise UsageError(
            f"--fold {bad[0]}: {dataset!r} is split into {split_folds} folds (0 to "
            f"{split_folds - 1})"
        )
    members = reg.experiment_runs(name) if stored is not None else []
    by_fold = {r.fold: r for r in members}
    plans = [_plan_fold(reg, name, k, by_fold.get(k), Path(options["out"])) for k in wanted]
    return CvPlan(name, dataset, split_folds, options, plans, new=stored is None)


def _plan_fold(
    reg: Registry, experiment: str, fold: int, member: RunRecord | None, out: Path
) -> FoldPlan:
    from hpatool.engine.oof import OOF_FILE

    name = member.name if member is not None else fold_run_name(experiment, fold)
    record = member
    if record is None and reg.has_run(name):
        record = reg.run(name)
        if record.experiment != experiment:
            raise UsageError(
                f"run {name!r} exists and is not fold {fold} of experiment {experiment!r}; "
                f"remove it ('hpatool runs remove {name}') or choose another --name"
            )
    if record is None:
        if (out / name / LAST).is_file():  # a folder whose registry row went: resume it
            return FoldPlan(fold, name, "resume", None, "its folder has a checkpoint")
        return FoldPlan(fold, name, "train")
    if record.status == "running" and not process_gone(record):
        process = record.config.get("process") or {}
        where = f" (process {process.get('pid')} on {process.get('host')})" if process else ""
        raise UsageError(
            f"run {name!r} (fold {fold} of {experiment!r}) is still running{where}; wait for "
            "it or stop it, then run 'hpatool cv' again"
        )
    if record.status in FINISHED and (record.out_dir / OOF_FILE).is_file():
        return FoldPlan(fold, name, "skip", record)
    state = "its process is gone" if record.status == "running" else record.status
    if (record.out_dir / LAST).is_file():
        return FoldPlan(fold, name, "resume", record, state)
    return FoldPlan(fold, name, "train", record, f"{state}, no checkpoint")


@dataclass
class FoldResult:
    fold: int
    run: str
    action: str  # what this invocation did: train, resume or skip
    status: str
    best_epoch: int | None
    best_f1: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "name": self.run,
            "action": self.action,
            "status": self.status,
            "best_epoch": self.best_epoch,
            "best_f1": self.best_f1,
        }


@dataclass
class CvResult:
    experiment: str
    dataset: str
    folds: list[FoldResult]
    oof: OofSummary | None = None
    #: why there is no OOF summary (no run has an oof.csv yet)
    oof_note: str | None = None
    all_folds: int = 0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.experiment,
            "dataset": self.dataset,
            "runs": [f.to_json() for f in self.folds],
        }
        doc.update(oof_json(self.oof))
        if self.oof_note:
            doc["oof_note"] = self.oof_note
        return doc


FoldProgress = Callable[[FoldPlan, int, int], AbstractContextManager["ProgressCallback | None"]]


def cross_validate(
    options: Mapping[str, Any],
    *,
    name: str,
    folds: int | None = None,
    fold_list: list[int] | None = None,
    config_file: str | Path | None = None,
    home: str | Path | None = None,
    fold_progress: FoldProgress | None = None,
) -> CvResult:
    """Train the folds of experiment ``name`` (see the module docstring). ``options``: the
    ``train`` options given (by parameter or ``TrainConfig`` name; ``None`` = not given).
    ``fold_progress(plan, i, n)`` is entered around each fold (i from 1): it may show a
    header, and gives the progress callback of the fold's ``fit``. Returns on every rank;
    the summary (``CvResult.oof``) is made on rank 0 only."""
    from hpatool.convert.pool import sigterm_as_interrupt
    from hpatool.engine.config import given_train_options
    from hpatool.engine.distributed import DistContext, keep_process_group, resolve_device
    from hpatool.engine.train import fit

    given = given_train_options(options, config_file)
    ctx = DistContext.from_env()
    device = resolve_device(str(given.get("device") or "auto"), ctx)
    current: FoldPlan | None = None
    with sigterm_as_interrupt(hangup=True), keep_process_group(ctx, device):
        with Registry.open(home) as reg:
            plan = plan_cv(reg, given, name=name, folds=folds, fold_list=fold_list)
            home_path = reg.home
            ctx.barrier()  # every rank has planned before the experiment is created
            if ctx.is_main and plan.new:
                config = train_config({**plan.options, "experiment": name})
                reg.create_experiment(
                    name, datasets=config.datasets, options=experiment_options(config)
                )
        ctx.barrier()
        try:
            for i, fold in enumerate(plan.folds, start=1):
                current = fold
                progress = fold_progress(fold, i, len(plan.folds)) if fold_progress else None
                with progress if progress is not None else nullcontext() as callback:
                    if fold.action == "skip":
                        continue
                    run_options = {
                        **plan.options,
                        "name": fold.run,
                        "fold": fold.fold,
                        "experiment": name,
                        "max_steps": given.get("max_steps"),
                    }
                    resume = fold.action == "resume"
                    if resume:  # the run's own options stand; those given must agree
                        run_options = {
                            **{k: v for k, v in given.items() if k not in RUN_OWN_KEYS},
                            "name": fold.run,
                            "out": plan.options["out"],
                            "max_steps": given.get("max_steps"),
                        }
                    fit(run_options, home=home, resume=resume, progress=callback)
            current = None
        except (KeyboardInterrupt, Interrupted) as exc:
            code = exc.exit_code if isinstance(exc, Interrupted) else 130
            why = {143: "terminated (SIGTERM)", 129: "hung up (SIGHUP)"}.get(code, "interrupted")
            where = f" in fold {current.fold} (run {current.run})" if current else ""
            raise Interrupted(
                f"{why}: cv {name!r} stopped{where}; run '{plan.command(home_path)}' again to "
                "resume it (finished folds are skipped)",
                code,
            ) from None
    return _cv_result(plan, home, ctx.is_main)


def _cv_result(plan: CvPlan, home: str | Path | None, main: bool) -> CvResult:
    with Registry.open(home) as reg:
        results = []
        for fold in plan.folds:
            record = reg.run(fold.run) if reg.has_run(fold.run) else None
            results.append(
                FoldResult(
                    fold.fold,
                    fold.run,
                    fold.action,
                    record.status if record else "-",
                    record.best_epoch if record else None,
                    record.best_f1 if record else None,
                )
            )
        result = CvResult(plan.experiment, plan.dataset, results, all_folds=plan.split_folds)
        if main:
            result.oof, result.oof_note = _oof_or_note(reg, reg.experiment_runs(plan.experiment))
    return result


def _oof_or_note(reg: Registry, runs: list[RunRecord]) -> tuple[OofSummary | None, str | None]:
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
    oof, note = _oof_or_note(reg, runs)
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


# -------------------------------------------------------------------------- runs import


class SplitDiffers(UserWarning):
    """An imported run was trained on another split of its dataset than the registry's: its
    validation fold is not a fold of this split, so its predictions are not out-of-fold."""


@dataclass
class ImportedRun:
    record: RunRecord
    experiment_created: bool = False
    notes: list[str] = field(default_factory=list)


def import_run(reg: Registry, folder: Path, *, name: str | None = None) -> ImportedRun:
    """Register the run folder ``folder`` (trained elsewhere) as run ``name`` (default: the
    name in its ``config.json``); see ``hpatool runs import``."""
    from hpatool.engine.oof import OOF_FILE

    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise NotFound(f"{folder}: no such folder (give a run folder, OUT/NAME)")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UsageError(f"{folder} is not a run folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        options = config["options"]
        if not isinstance(options, dict):
            raise TypeError
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise DataError(
            f'{config_path}: not a run\'s {CONFIG_FILE} (no "options" object); it is '
            "written by 'hpatool train'"
        ) from None
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        raise UsageError(
            f"{folder} is not a finished run folder: it has no {METRICS_FILE} (no epoch finished)"
        )
    rows = read_metrics_csv(metrics_path)
    run_name = check_name(str(name or options.get("name") or folder.name), "run")
    if reg.has_run(run_name):
        raise AlreadyExists(
            f"run {run_name!r} already exists in {reg.path}; import it under another name "
            "with --name NEW"
        )
    datasets = [str(d) for d in options.get("datasets") or []]
    if not datasets:
        raise DataError(f'{config_path}: the run names no datasets ("options"."datasets")')
    unknown = [d for d in datasets if not reg.has_dataset(d)]
    if unknown:
        raise UsageError(
            f"run {run_name!r} was trained on dataset {unknown[0]!r}, which is not in "
            f"{reg.path}; register it first ('hpatool datasets add {unknown[0]} ...')"
        )
    fold = options.get("fold")
    fold = int(fold) if isinstance(fold, int) else None
    experiment = options.get("experiment")
    epochs = int(options.get("epochs") or 0)
    full = [r for r in rows if not r.get("partial")]
    epochs_done = max((int(r["epoch"]) for r in full), default=0)
    best = best_row(rows)
    best_f1 = None if best is None else best["macro_f1"]
    if best is not None:  # metrics.csv rounds to 6 digits; thresholds.json has the full value
        try:
            doc = json.loads((folder / THRESHOLDS_FILE).read_text(encoding="utf-8"))
            if doc.get("epoch") == best["epoch"] and isinstance(doc.get("macro_f1"), float):
                best_f1 = doc["macro_f1"]
        except (OSError, ValueError, AttributeError):
            pass
    finished = epochs_done >= epochs > 0 and (folder / OOF_FILE).is_file()
    status = "done" if finished else "interrupted"
    result_notes: list[str] = []
    split = reg.split_info(datasets[0])
    if split is None:
        result_notes.append(f"dataset {datasets[0]!r} has no split in this registry")
    differs = split is not None and _other_split(reg, folder, config, datasets[0], fold, split)
    created = False
    with reg.transaction():
        if experiment is not None:
            experiment = check_name(str(experiment), "experiment")
            known = {f.name for f in dataclasses.fields(TrainConfig)}
            cfg = train_config(
                {**{k: v for k, v in options.items() if k in known}, "name": run_name}
            )
            check_experiment_run(reg, cfg, run_name)
            created = not reg.has_experiment(experiment)
            ensure_experiment(reg, cfg)
        record = reg.create_run(
            run_name,
            arch=str(options.get("arch") or config.get("arch") or "?"),
            datasets=datasets,
            fold=fold,
            config={k: v for k, v in config.items() if k != "process"},
            out_dir=folder,
            experiment=experiment,
            status=status,
        )
        record = reg.update_run(
            run_name,
            best_f1=best_f1,
            best_epoch=None if best is None else best["epoch"],
            epochs_done=epochs_done,
        )
    if differs and split is not None:
        saved = config.get("split") or {}
        warnings.warn(
            f"run {run_name!r} was trained on a split of {datasets[0]!r} ({saved.get('folds')} "
            f"folds, seed {saved.get('seed')}) other than the registry's ({split['folds']} "
            f"folds, seed {split['seed']}): its validation fold is not fold {fold} of this "
            "split, so its predictions are not out-of-fold here",
            SplitDiffers,
            stacklevel=2,
        )
    return ImportedRun(record, created, result_notes)


def _other_split(
    reg: Registry,
    folder: Path,
    config: dict[str, Any],
    dataset: str,
    fold: int | None,
    split: dict[str, Any],
) -> bool:
    """Whether the run in ``folder`` validated on something else than fold ``fold`` of the
    registry's split of ``dataset``: its ``oof.csv`` ids (its validation fold) are not all in
    that fold, or, without one, its recorded split has other ``--folds`` or ``--seed`` (the
    same split made again in another registry, from the same samples, has the same folds)."""
    from hpatool.engine.oof import OOF_FILE, read_oof

    oof = folder / OOF_FILE
    if fold is not None and oof.is_file():
        ids, _ = read_oof(oof)
        folds = reg.folds(dataset)
        return any(folds.get(i) != fold for i in ids)
    saved = config.get("split")
    if not isinstance(saved, dict):
        return False
    return (saved.get("folds"), saved.get("seed")) != (split.get("folds"), split.get("seed"))
