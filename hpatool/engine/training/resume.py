"""Which run a ``train`` invocation trains, and its row in the registry: a new run (its name and
folder, refused if taken), or, with ``--resume``, the run whose ``checkpoint-last.pt`` it
continues, with the rules that refuse a resume that would change what the run is (another arch,
dataset, fold, crop...), a checkpoint that is another run's, and a validation fold that changed
since the run started. A run of an experiment (``--experiment``, ``hpatool cv``) must validate
on the experiment's dataset and take a fold no other run of it has (``engine.runs.experiments``).
``register_run`` records the run once every check has passed; the run's
folder is checked as an output (``hpatool.outputs``) first. A run that stops early (Ctrl-C,
SIGTERM, SIGHUP, a full disk) ends with a line that says how to go on (``stop_error``).

Options given on the command line or in a ``--config`` file take part in these rules alike; the
options not given come from the run's saved ones (see ``engine.config.train_config``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hpatool._io import DiskFull
from hpatool.data.samples import TrainValItems
from hpatool.engine.config import IDENTITY_KEYS, TrainConfig, flag, train_config, with_legacy
from hpatool.engine.distributed import DistContext
from hpatool.engine.models import checkpoint as ckpt_mod
from hpatool.engine.models.factory import resolve_arch
from hpatool.engine.runs.admin import process_gone, process_info
from hpatool.engine.runs.experiments import check_experiment_run, ensure_experiment
from hpatool.engine.runs.run_dir import LAST, RUN_FILES, RunDir
from hpatool.errors import AlreadyExists, DataError, HpaToolError, Interrupted, UsageError
from hpatool.outputs import check_output
from hpatool.registry import Registry, RunStatus, check_name
from hpatool.signals import stop_code, stop_reason


@dataclass
class RunTarget:
    """The run to train: its configuration, name, folder and, when resumed, its checkpoint."""

    config: TrainConfig
    name: str
    run_dir: RunDir
    checkpoint: dict[str, Any] | None = None

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None


def default_run_name(arch: str, fold: int) -> str:
    return f"{arch}-f{fold}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resolve_run(given: dict[str, Any], resume: bool, ctx: DistContext, reg: Registry) -> RunTarget:
    """The run that options ``given`` (by ``TrainConfig`` name) and ``resume`` mean; its
    folder's files are checked as outputs (``hpatool.outputs``) before any work."""
    target = _resumed_run(given, reg) if resume else _new_run(given, ctx, reg)
    for name in RUN_FILES:
        check_output(target.run_dir.path / name, "--out", reg, own_run=target.name)
    return target


def _new_run(given: dict[str, Any], ctx: DistContext, reg: Registry) -> RunTarget:
    config = train_config(given)
    config.validate()
    if not config.name:
        config.name = ctx.broadcast(default_run_name(config.arch, config.fold))
    name = check_name(str(config.name), "run")
    if reg.has_run(name) and not is_stale_run(reg, name):
        raise AlreadyExists(
            f"run {name!r} already exists in {reg.path}; pass --resume to continue it or choose "
            "another --name"
        )
    check_experiment_run(reg, config, name)
    run_dir = RunDir(Path(config.out).expanduser().resolve() / name)
    if run_dir.last.exists():
        raise AlreadyExists(
            f"{run_dir.path} already holds a run ({LAST}); pass --resume to continue it or "
            "choose another --name or --out"
        )
    return RunTarget(config, name, run_dir)


def _resumed_run(given: dict[str, Any], reg: Registry) -> RunTarget:
    name = given.get("name")
    if not name:
        raise UsageError("--resume needs --name RUN (see 'hpatool runs list')")
    check_name(name, "run")
    folder = (
        reg.run(name).out_dir
        if reg.has_run(name)
        else Path(given.get("out") or "runs").expanduser().resolve() / name
    )
    run_dir = RunDir(folder)
    averaged = reg.run(name).config.get("averaged") if reg.has_run(name) else None
    if isinstance(averaged, dict):
        raise UsageError(
            f"run {name!r} is the mean of epochs of run {averaged.get('from')!r} ('hpatool "
            "runs average'): it is not trained further; resume that run, or start a new one "
            f"from it with --pretrained {folder / 'checkpoint-best.pt'}"
        )
    if not run_dir.last.is_file():
        record = reg.run(name) if reg.has_run(name) else None
        if record is not None and record.status == RunStatus.RUNNING and not process_gone(record):
            how = "it is still running; wait for its first epoch, or stop it first"
        elif record is not None:
            how = "start it again without --resume (the same --name may be used)"
        else:
            raise UsageError(
                f"--resume: no run {name!r} in {reg.path} ('hpatool runs list' shows the runs; "
                f"a run trained with another --home is registered there) and no {LAST} in "
                f"{folder}"
            )
        raise UsageError(
            f"--resume: run {name!r} has no {LAST} in {folder} (no epoch finished "
            f"yet, or a different --out); {how}"
        )
    checkpoint = ckpt_mod.load_checkpoint(run_dir.last)
    saved = checkpoint.get("config", {}).get("options", {})
    check_own_checkpoint(checkpoint, saved, name, reg, run_dir.last)
    check_resume_options(saved, given, run_dir.last)
    config = train_config({**given, "name": name}, base=saved)
    if reg.has_run(name) and reg.run(name).experiment is not None:
        config.experiment = reg.run(name).experiment  # the registry's word wins (runs import)
    check_experiment_run(reg, config, name)
    if config.epochs * max(1, checkpoint["steps_per_epoch"]) < checkpoint["step"]:
        raise UsageError(
            f"--epochs {config.epochs} is fewer than the {checkpoint['epoch']} epochs run "
            f"{name!r} has done; give more --epochs"
        )
    config.validate()
    return RunTarget(config, name, run_dir, checkpoint)


def check_resume_options(saved: dict[str, Any], given: dict[str, Any], path: Path) -> None:
    """Refuse to resume with options that would change what the run is."""
    given_arch = given.get("arch")
    if given_arch is not None and resolve_arch(given_arch) != resolve_arch(saved["arch"]):
        raise UsageError(
            f"checkpoint {path} is of --arch {saved.get('arch')}, not {given_arch}; resume "
            "with the run's arch or start a new run with another --name"
        )
    given_experiment = given.get("experiment")
    if given_experiment is not None and given_experiment != saved.get("experiment"):
        was = saved.get("experiment")
        raise UsageError(
            f"--experiment {given_experiment} differs from the run's "
            f"{'experiment ' + repr(was) if was else 'none'} in {path}; a run stays in the "
            "experiment it started in: resume without --experiment, or start a new run"
        )
    defaults = with_legacy({f.name: f.default for f in dataclasses.fields(TrainConfig)})
    for key in IDENTITY_KEYS:
        if key == "arch" or given.get(key) is None:
            continue
        value = list(given[key]) if key == "datasets" else given[key]
        # an option newer than the run (--augment, --ema) had its legacy value then
        was = saved.get(key, defaults.get(key))
        if value != was:
            raise UsageError(
                f"{flag(key)} {_show(value)} differs from the run's {_show(was)} in "
                f"{path}; resume with the same value (or leave it out) or start a new run with "
                "another --name"
            )


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def check_own_checkpoint(
    checkpoint: dict[str, Any], saved: dict[str, Any], name: str, reg: Registry, path: Path
) -> None:
    """Refuse a checkpoint that belongs to another run (copied in, or another run's folder)."""
    other = saved.get("name")
    if other and other != name:
        raise DataError(
            f"{path} is a checkpoint of run {other!r}, not {name!r}; resume {other!r} instead "
            "or start a new run"
        )
    if reg.has_run(name):
        registered = reg.run(name).arch
        if resolve_arch(str(checkpoint.get("arch"))) != resolve_arch(registered):
            raise DataError(
                f"{path} holds a {checkpoint.get('arch')} model but run {name!r} is registered as "
                f"{registered}; the file is not this run's checkpoint"
            )


def _split_text(split: dict[str, Any]) -> str:
    made = f", made {split['created_at']}" if split.get("created_at") else ""
    return f"{split.get('folds')} folds, seed {split.get('seed')}{made}"


class SamplesChanged(UserWarning):
    """A resumed run's samples differ from those it started with (images arrived or went)."""


def check_same_split(target: RunTarget, parts: TrainValItems) -> None:
    """Refuse to resume a run whose validation fold changed (its first dataset was re-split);
    warn when its usable samples changed (a download went on, files were deleted): the run
    continues on the samples there now, so it is no longer an exact continuation."""
    if target.checkpoint is None:
        return
    saved = target.checkpoint["config"]
    was = (saved.get("train_samples"), saved.get("val_samples"))
    now = (len(parts.train), len(parts.val))
    if None not in was and was != now:
        import warnings

        warnings.warn(
            f"run {target.name!r} started with {was[0]:,} training and {was[1]:,} validation "
            f"samples and now has {now[0]:,} and {now[1]:,} (images arrived or went): it goes "
            "on with these, so the resume is not exact and its scores compare with care",
            SamplesChanged,
            stacklevel=2,
        )
    saved_split = saved.get("split")
    # a split made again with the same --folds and --seed (after more images arrived) has
    # other folds: compare its time too, where the checkpoint has one
    now_split = {k: parts.split.get(k) for k in (saved_split or {})}
    if saved_split is not None and saved_split != now_split:
        raise UsageError(
            f"dataset {target.config.datasets[0]!r} was re-split since run {target.name!r} "
            f"started ({_split_text(saved_split)} -> {_split_text(parts.split)}); its validation "
            "fold has changed, start "
            "a new run"
        )


def is_stale_run(reg: Registry, name: str) -> bool:
    """A run that failed, was interrupted or whose process is gone (``run_admin.process_gone``)
    before its first checkpoint: nothing to resume, so a new run may take its name (the old row
    is replaced when the new one registers)."""
    record = reg.run(name)
    ended = record.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) or process_gone(record)
    return ended and not (record.out_dir / LAST).exists()


def register_run(
    reg: Registry, target: RunTarget, resolved: dict[str, Any], ctx: DistContext
) -> None:
    """Once every rank has passed its checks, rank 0 registers the run (or marks a resumed one
    running) and writes its ``config.json``: one unit of work, so a failure leaves neither. The
    registry's copy of the configuration also names the process (``run_admin.process_info``)."""
    ctx.barrier()
    if ctx.is_main:
        name = target.name
        stored = {**resolved, "process": process_info()}
        with reg.transaction():
            check_experiment_run(reg, target.config, name)  # again, under the write lock
            ensure_experiment(reg, target.config)
            if target.resumed and reg.has_run(name):
                reg.update_run(name, status=RunStatus.RUNNING, config=stored)
            else:  # a new run, a resumed run missing from this registry, or a stale one replaced
                reg.create_run(
                    name,
                    arch=target.config.arch,
                    datasets=target.config.datasets,
                    fold=target.config.fold,
                    config=stored,
                    out_dir=target.run_dir.path,
                    replace=not target.resumed and reg.has_run(name) and is_stale_run(reg, name),
                    experiment=target.config.experiment,
                )
            target.run_dir.write_config(resolved)
    ctx.barrier()


def resume_advice(target: RunTarget, home: Path | None = None) -> str:
    """How to go on with a run that stopped early (Ctrl-C, SIGTERM, a full disk): resume it
    from its last saved epoch, or, with none saved yet, start it again. ``home``: the
    registry's home, named in the command when it is not the one a plain command uses (the
    demo's, say)."""
    if target.run_dir.last.is_file():
        where = ""
        if home is not None:
            from hpatool.registry import resolve_home

            if resolve_home(None).expanduser().resolve() != home.expanduser().resolve():
                where = f" --home {home}"
        return f"continue the run with 'hpatool{where} train --resume --name {target.name}'"
    return f"start run {target.name!r} again with the same command (no epoch of it was saved)"


def stop_error(
    exc: BaseException, target: RunTarget, home: Path | None = None
) -> HpaToolError | None:
    """The one-line error for a run stopped by ``exc`` that says how to go on: Ctrl-C (exit
    130), SIGTERM (143), SIGHUP (129, a closed terminal) or a full disk; ``None`` for any other
    failure."""
    advice = resume_advice(target, home)
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        code = stop_code(exc)
        return Interrupted(f"{stop_reason(code)}: run {target.name!r} stopped; {advice}", code)
    if isinstance(exc, DiskFull):
        return exc.with_advice(advice)
    return None
