"""``fit``: train (or resume) a run; the step functions are ``engine.training.steps``'s.

``fit(options, home=..., resume=...)`` trains a 4-channel CNN on registered datasets:
validation is fold ``K`` of the first dataset, training everything else (see
``hpatool.data.samples.train_val_items``); rare classes are oversampled by the sampler
(``hpatool.data.sampling``); AdamW with a linear warm-up then a cosine decay over all steps
(``engine.training.optim``); AMP (bf16 where supported, else fp16 with a GradScaler) and
channels_last on
CUDA. After every epoch: validation loss (BCE, whatever ``--loss``) and macro F1 (at 0.5 and
with per-class thresholds tuned on the validation predictions), a row in ``metrics.csv``,
``checkpoint-last.pt`` (atomic), ``checkpoint-best.pt`` + ``thresholds.json`` on a new best tuned
macro F1, and ``curves.png``
(``engine.runs.run_dir``). ``config.json`` holds the resolved configuration; the run is in the
registry. At the end of the run (``engine.training.epochs.write_oof_step``) the best checkpoint
scores the
validation fold with the run's view (``--crop``, ``--eval-crops``, ``--eval-agg``, ``--tta``,
seed 0, as ``predict`` would) into ``oof.csv``, and ``thresholds.json`` is re-tuned on those
probabilities; only then is the run ``done`` in the registry.

Exact resume: every random choice is derived from the run seed (model init from
``torch.manual_seed(seed)``; the sampler's draw from ``(seed, epoch)``; each sample's crop and
flip from ``(seed, epoch, position)``), DataLoaders get their own generator so they never touch
the global RNG, and the checkpoint holds the model, optimizer, scheduler, scaler, epoch, step and
RNG states (``engine.training.state``). On CPU with ``--workers 0`` a run stopped (``--max-steps``)
and
resumed ends with the same weights, bit for bit, as one that was never stopped.

DDP: run under ``torchrun``; ``engine.distributed`` reads the environment. gloo on CPU, NCCL on
CUDA. Each rank trains on its slice of the same seeded draw; ``--batch-size`` is per process.
Validation is sharded over the ranks and the predictions are gathered, so every rank computes
the same metrics. Only rank 0 writes files and the registry.

The engine never prints: progress goes to an optional callback receiving ``TrainEvent``s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpatool.engine.config import TrainConfig, given_train_options
from hpatool.engine.distributed import DistContext, resolve_device
from hpatool.engine.training.build import TrainData, build_data, build_trainer, resolved_config
from hpatool.engine.training.epochs import EpochRun, announce, train_epochs
from hpatool.engine.training.events import ProgressCallback
from hpatool.engine.training.resume import register_run, resolve_run
from hpatool.engine.training.state import TrainState
from hpatool.engine.training.tensorboard import ScalarLog, check_available, with_scalars
from hpatool.registry import Registry
from hpatool.signals import deferred_interrupts, sigterm_as_interrupt


@dataclass
class FitResult:
    name: str
    run_dir: Path
    epochs_done: int
    steps: int
    best_f1: float | None
    best_epoch: int | None
    status: str  # "done" or "stopped" (--max-steps)
    history: list[dict[str, Any]]
    config: dict[str, Any]
    #: the OOF step's macro F1 and view (``None``: no oof.csv, or the existing one was kept)
    oof_macro_f1: float | None = None  # in sample: thresholds tuned on oof.csv itself
    oof_macro_f1_heldout: float | None = None  # split-half held out (metrics.split_half)
    oof_view: dict[str, Any] | None = None
    oof_text: str | None = None  # the view in words ("max of 8 crops of 256px")


def fit(
    options: TrainConfig | Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    home: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> FitResult:
    """Train (or, with ``resume``, continue) a run; see the module docstring.

    ``options``: a ``TrainConfig``, or the ``hpatool train`` options given, by name (``None`` =
    not given), over those of ``config_file`` (TOML, or a run's ``config.json``); with
    ``resume``, the options not given come from the run's checkpoint. Returns a ``FitResult`` on
    every rank; only rank 0 writes files and the registry.
    """
    given = given_train_options(options, config_file)
    ctx = DistContext.from_env()
    device = resolve_device(str(given.get("device") or "auto"), ctx)
    ctx.init(device)
    data: TrainData | None = None
    scalars: ScalarLog | None = None
    try:
        with sigterm_as_interrupt(hangup=True), Registry.open(home) as reg:
            target = resolve_run(given, resume, ctx, reg)
            if target.config.tensorboard:
                check_available()  # before anything is built or registered
            data = build_data(target, reg, ctx, device)
            trainer = build_trainer(target.config, data, device, fresh=not target.resumed)
            state = TrainState()
            if target.checkpoint is not None:
                state = TrainState.restore(
                    target.checkpoint,
                    trainer.objects,
                    name=target.name,
                    arch=target.config.arch,
                    world_size=ctx.world_size,
                )
            trainer.distribute(ctx)
            resolved = resolved_config(target.config, data, trainer, ctx)
            register_run(reg, target, resolved, ctx)
            if target.config.tensorboard and ctx.is_main:
                scalars = ScalarLog(target.run_dir.path)
            events = announce(target, data, trainer, state, ctx, with_scalars(progress, scalars))
            run = EpochRun(target, data, trainer, state, resolved, reg, ctx, events)
            status = train_epochs(run)
    finally:
        with deferred_interrupts():
            if data is not None:
                data.close()
            if scalars is not None:
                scalars.close()
            ctx.destroy()
    last = state.history[-1] if state.history else None
    return FitResult(
        name=target.name,
        run_dir=target.run_dir.path,
        epochs_done=last["epoch"] - int(last["partial"]) if last else 0,
        steps=state.step,
        best_f1=state.best_f1,
        best_epoch=state.best_epoch,
        status=status,
        history=state.history,
        config=resolved,
        oof_macro_f1=None if run.oof is None else run.oof.macro_f1,
        oof_macro_f1_heldout=None if run.oof is None else run.oof.heldout_macro_f1,
        oof_view=None if run.oof is None else run.oof.view.to_json(),
        oof_text=None if run.oof is None else run.oof.text,
    )
