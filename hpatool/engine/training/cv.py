"""``hpatool cv``: the fold runs of one dataset's split, trained as a K-fold cross-validation.

``cross_validate`` trains fold k of the first dataset's split as run ``EXP-f<k>`` of experiment
``EXP``, one fold after another in this process (under torchrun every rank runs the loop,
sharing one process group: ``distributed.keep_process_group``). Run again, it skips the folds
whose runs are finished (``done`` or ``stopped``, with an ``oof.csv``), resumes the
interrupted, failed or dead ones from their ``checkpoint-last.pt`` (or starts them again when
they have none) and refuses one still running. The experiment records its datasets and the
options its runs start with (stored when its first fold run registers): a rerun takes the
options it does not give from there, and refuses one that differs (``plan_cv``, with
``experiments.option_conflict``, as ``train --experiment``). The result ends with the
experiment's out-of-fold summary (``engine.runs.experiments``).

The engine never prints: the CLI passes ``fold_progress`` for each fold's progress.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hpatool.engine.config import train_config, with_legacy
from hpatool.engine.runs.admin import process_gone
from hpatool.engine.runs.experiments import (
    RUN_OWN_KEYS,
    conflict_text,
    fold_run_name,
    oof_json,
    oof_or_note,
    option_conflict,
)
from hpatool.engine.runs.run_dir import LAST
from hpatool.errors import Interrupted, UsageError
from hpatool.registry import FINISHED_STATUSES, Registry, RunRecord, RunStatus, check_name

if TYPE_CHECKING:
    from hpatool.engine.runs.oof import OofSummary
    from hpatool.engine.training.events import ProgressCallback

#: A run in one of these states, with an ``oof.csv``, is a finished fold.
FINISHED = FINISHED_STATUSES


#: What ``cv`` does with a fold: train a new run, resume one, or skip a finished one.
CvAction = Literal["train", "resume", "skip"]


@dataclass
class FoldPlan:
    """What ``cv`` does with one fold: ``train`` (a new run), ``resume`` it or ``skip`` it
    (finished); ``record`` is its run's registry row, if it has one."""

    fold: int
    run: str
    action: CvAction
    record: RunRecord | None = None
    why: str = ""  # for a resumed or restarted run: its state


@dataclass
class CvPlan:
    experiment: str
    dataset: str
    split_folds: int
    options: dict[str, Any]  # by TrainConfig name: the given ones over the experiment's
    folds: list[FoldPlan]
    new: bool  # the experiment is not in the registry yet, or has no runs
    #: ``--epochs N`` above the experiment's: its folds are continued to N (``extend_epochs``)
    extend_to: int | None = None

    def command(self, home: Path | None = None) -> str:
        """The command that goes on with this cross-validation."""
        where = ""
        if home is not None:
            from hpatool.registry import resolve_home

            if resolve_home(None).expanduser().resolve() != Path(home).expanduser().resolve():
                where = f" --home {home}"
        return f"hpatool{where} cv --name {self.experiment}"


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
        # an experiment with no runs yet (a cv that failed before its first fold registered)
        # takes the options given: its first run registered stores them (ensure_experiment)
        extend_to = _extend_to(name, given, stored.options, reg.experiment_runs(name))
        checked = {k: v for k, v in given.items() if not (extend_to and k == "epochs")}
        conflict = option_conflict(checked, stored.options) if stored.runs else None
        if conflict is not None:
            raise UsageError(
                f"{conflict_text(*conflict, name)}; rerun with the same value (or leave it "
                "out), or start a new experiment with another --name"
            )
        options = {**with_legacy(stored.options), "datasets": stored.datasets, **given}
    else:
        options, extend_to = dict(given), None
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
    plans = [
        _plan_fold(reg, name, k, by_fold.get(k), Path(options["out"]), extend_to) for k in wanted
    ]
    new = stored is None or not stored.runs
    return CvPlan(name, dataset, split_folds, options, plans, new, extend_to)


def _extend_to(
    name: str, given: Mapping[str, Any], stored: Mapping[str, Any], runs: list[RunRecord]
) -> int | None:
    """``cv --name EXP --epochs N`` with N above the experiment's epochs: N (every fold is
    continued to it, the cosine schedule stretched as ``train --resume --epochs`` does); a
    fold that trained more epochs than N is an error (a run is never shortened)."""
    epochs, was = given.get("epochs"), stored.get("epochs")
    if epochs is None or was is None or not runs or int(epochs) == int(was):
        return None
    for run in runs:
        options = run.config.get("options") if isinstance(run.config, dict) else None
        trained = max(run.epochs_done, int((options or {}).get("epochs") or 0))
        if int(epochs) < trained:
            raise UsageError(
                f"--epochs {epochs} is fewer than the {trained} epochs fold {run.fold} (run "
                f"{run.name!r}) of experiment {name!r} trained: a run is not shortened; give "
                f"--epochs {trained} or more, or start a new experiment with another --name"
            )
    return int(epochs)


def _plan_fold(
    reg: Registry,
    experiment: str,
    fold: int,
    member: RunRecord | None,
    out: Path,
    extend_to: int | None = None,
) -> FoldPlan:
    from hpatool.engine.runs.oof import OOF_FILE

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
    if record.status == RunStatus.RUNNING and not process_gone(record):
        process = record.config.get("process") or {}
        where = f" (process {process.get('pid')} on {process.get('host')})" if process else ""
        raise UsageError(
            f"run {name!r} (fold {fold} of {experiment!r}) is still running{where}; wait for "
            "it or stop it, then run 'hpatool cv' again"
        )
    trained = (record.config.get("options") or {}).get("epochs")
    shorter = extend_to is not None and trained is not None and int(trained) < extend_to
    if shorter and (record.out_dir / LAST).is_file():
        why = f"continued from {trained} to {extend_to} epochs"
        return FoldPlan(fold, name, "resume", record, why)
    if record.status in FINISHED and (record.out_dir / OOF_FILE).is_file():
        return FoldPlan(fold, name, "skip", record)
    state = "its process is gone" if record.status == RunStatus.RUNNING else record.status
    if (record.out_dir / LAST).is_file():
        return FoldPlan(fold, name, "resume", record, state)
    return FoldPlan(fold, name, "train", record, f"{state}, no checkpoint")


@dataclass
class FoldResult:
    fold: int
    run: str
    action: CvAction  # what this invocation did
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
    from hpatool.engine.config import given_train_options
    from hpatool.engine.distributed import DistContext, keep_process_group, resolve_device
    from hpatool.engine.training.fit import fit
    from hpatool.signals import sigterm_as_interrupt, stop_code, stop_reason

    given = given_train_options(options, config_file)
    ctx = DistContext.from_env()
    device = resolve_device(str(given.get("device") or "auto"), ctx)
    current: FoldPlan | None = None
    with sigterm_as_interrupt(hangup=True), keep_process_group(ctx, device):
        with Registry.open(home) as reg:
            plan = plan_cv(reg, given, name=name, folds=folds, fold_list=fold_list)
            home_path = reg.home
            if plan.extend_to is not None and ctx.is_main:  # the folds still to come train N
                reg.update_experiment_options(name, {"epochs": plan.extend_to})
        # the experiment is created (or, with no runs yet, takes these options) when its first
        # fold run registers (experiments.ensure_experiment): a cv that fails before that
        # leaves nothing that a retry with other options would be refused by
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
            code = stop_code(exc)
            why = stop_reason(code)
            where = f" in run {current.run} (fold {current.fold})" if current else ""
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
            result.oof, result.oof_note = oof_or_note(reg, reg.experiment_runs(plan.experiment))
    return result
