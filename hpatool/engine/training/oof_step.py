"""The end of a run and validation with the evaluation view: ``write_oof_step`` (the best
checkpoint scores the validation fold with the run's view, seed 0, as ``predict`` would, into
``oof.csv``, and ``thresholds.json`` is tuned again on it), ``needs_oof`` (whether a run ends
with it), ``validate_view`` (``--val-view eval``) over ``score_validation_fold``, and
``check_validation_finite`` (a diverged run named, not scored)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hpatool.engine.training.epoch_run import EpochRun, OofResult
from hpatool.engine.training.steps import ValidationResult
from hpatool.engine.views import View
from hpatool.errors import WorkFailed
from hpatool.signals import deferred_interrupts, raise_held


def check_validation_finite(run: EpochRun, result: ValidationResult) -> None:
    """A ``WorkFailed`` naming the run, the epoch's model and the first sample when a
    validation probability is not finite (a diverged run), never a silent "no label"."""
    bad = np.flatnonzero(~np.isfinite(result.probs).all(axis=1))
    if not bad.size:
        return
    sample = run.data.parts.val[int(bad[0])].id
    raise WorkFailed(
        f"run {run.target.name}: the model of epoch {run.state.epoch + 1} gave non-finite "
        f"probabilities (NaN or inf) for validation sample {sample!r} ({bad.size:,} samples): "
        "training diverged; train again with a lower --lr (or --no-amp)"
    )


def validate_view(
    run: EpochRun, view: View, on_batch: Callable[[int], None] | None
) -> ValidationResult:
    """Validation with ``view`` (``--val-view eval``): the validation fold scored as the
    out-of-fold step scores it (seed 0, sharded over the ranks), in the training dtype; the
    loss is BCE of the aggregated probabilities."""
    from hpatool.data.samples import targets_array

    model = run.trainer.objects.eval_model  # the moving average with --ema
    model.eval()  # train_one_epoch sets train mode again

    def progress(done: int, total: int) -> None:
        if on_batch is not None:
            on_batch(done)

    name = f"run {run.target.name} (epoch {run.state.epoch + 1})"
    probs = score_validation_fold(run, model, view, progress, name)
    targets = targets_array(run.data.parts.val).astype(np.float32)
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    return ValidationResult(loss=loss, probs=probs, targets=targets)


def score_validation_fold(
    run: EpochRun,
    model: torch.nn.Module,
    view: View,
    progress: Callable[[int, int], None] | None,
    model_name: str,
) -> np.ndarray:
    """``(n, 28)`` probabilities of the validation fold (in its order) under ``view``: seed 0,
    the training dtype, this rank's share scored and every rank's gathered."""
    from hpatool.engine.scoring.score import Scores, score

    config, trainer, ctx = run.target.config, run.trainer, run.ctx
    items = validation_items(run)
    local = score(
        model,
        items,
        view,
        mean=trainer.spec.mean,
        std=trainer.spec.std,
        batch_size=config.batch_size,
        workers=config.workers,
        device=trainer.device,
        seed=0,
        strict=True,
        rank=ctx.rank,
        world_size=ctx.world_size,
        progress=progress,
        amp_dtype=trainer.amp_dtype,
        model_name=model_name,
    )
    merged = Scores()
    for part in ctx.gather(local):
        merged.update(part)
    return np.stack([merged.probs[item.index] for item in items])


def validation_items(run: EpochRun) -> list[Any]:
    """The validation samples as ``ScoreItem``s numbered by their first dataset's positions
    (what ``predict`` numbers samples by, so their random windows are predict's)."""
    from hpatool.engine.scoring.score import ScoreItem

    positions = {s.id: i for i, s in enumerate(run.reg.samples(run.target.config.datasets[0]))}
    return [ScoreItem(positions[it.id], it.root, it.id, it.cache) for it in run.data.parts.val]


def needs_oof(run: EpochRun, *, trained: bool) -> bool:
    """Whether the run ends with the out-of-fold step: it has a best checkpoint, and it trained
    in this invocation, or has no ``oof.csv`` yet (killed while scoring it), or its stored view
    is not the run's view now (a resume with another ``--eval-crops``, say). Rank 0 decides."""
    from hpatool.engine.runs.oof import OOF_FILE
    from hpatool.engine.runs.run_dir import run_view as stored_view

    run_dir = run.target.run_dir
    decision = False
    if run.ctx.is_main and run_dir.best.is_file():
        decision = (
            trained
            or not (run_dir.path / OOF_FILE).is_file()
            or stored_view(run_dir.path) != run.target.config.view
        )
    return bool(run.ctx.broadcast(decision))


def write_oof_step(run: EpochRun) -> OofResult:
    """Score the validation fold with ``checkpoint-best.pt`` and the run's view (seed 0, the
    dataset positions ``predict`` numbers samples by), sharded over the ranks; rank 0 writes
    ``oof.csv`` and ``thresholds.json`` tuned on it (together: a Ctrl-C or SIGTERM is held
    back until both are written)."""
    from hpatool.data.samples import targets_array
    from hpatool.engine.metrics import heldout_macro_f1, macro_f1, tune_thresholds
    from hpatool.engine.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from hpatool.engine.runs.oof import OOF_FILE, write_oof

    config, trainer, ctx = run.target.config, run.trainer, run.ctx
    run_dir = run.target.run_dir
    parts = run.data.parts
    view = config.view
    text = view.text(tuple(run.data.image_sizes[config.datasets[0]]))  # type: ignore[arg-type]
    step = run.state.step
    epoch = run.state.epoch

    def progress(done: int, total: int) -> None:
        run.events("oof", epoch, step, val_done=done, val_total=total, info={"view": text})

    checkpoint = load_checkpoint(run_dir.best, map_location=trainer.device)
    model, _ = build_model_from_checkpoint(checkpoint, trainer.device, run_dir.best)
    del checkpoint
    model = model.to(memory_format=torch.channels_last)
    name = f"run {run.target.name} ({run_dir.best.name})"
    probs = score_validation_fold(run, model, view, progress if ctx.is_main else None, name)
    del model
    items = parts.val
    y_true = targets_array(parts.val)
    thresholds = tune_thresholds(y_true, probs)
    result = OofResult(
        macro_f1=macro_f1(y_true, probs >= thresholds),
        thresholds=thresholds.tolist(),
        view=view,
        text=text,
        samples=len(items),
        heldout_macro_f1=heldout_macro_f1(y_true, probs),
    )
    with deferred_interrupts() as held:
        if ctx.is_main:
            write_oof(run_dir.path / OOF_FILE, [it.id for it in items], probs)
            run_dir.write_oof_thresholds(
                result.thresholds, result.view.to_json(), result.macro_f1, result.heldout_macro_f1
            )
    ctx.barrier()
    run.oof = result
    raise_held(held)
    return result
