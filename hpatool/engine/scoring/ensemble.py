"""The scoring that ``hpatool predict`` (``engine.scoring.predict``) and ``hpatool evaluate``
(``engine.scoring.evaluate``) share: a dataset scored by one model or an ensemble.

Both score images the same way (``hpatool.engine.scoring.score``: views, aggregation, thresholds)
with the models that ``hpatool.engine.scoring.model_source`` finds: one, or an ensemble (``--run A
--run B``, ``--experiment EXP``) whose models score one after another, each with its own view
and the same seed, and whose probabilities are averaged (``average_scores``). Every check (the
images' headers, the architectures' input sizes) is made once for all models before any
scores; the command's own checks run then too (``BeforeScoring``). Each model's view is the one
stored with its thresholds unless ``--crops``/``--agg``/``--tta``/``--crop-size`` say otherwise
(then one ``ViewMismatch`` warning). Under ``torchrun`` each rank scores its share with each
model and rank 0 gathers the averaged probabilities (``Scored``). SIGTERM stops the scoring as
Ctrl-C does (``score_or_stop``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import ProgressFn
from hpatool.data.cache import CacheView, use_cache
from hpatool.engine.config import PredictConfig, parse_threshold
from hpatool.engine.models import checkpoint as ckpt_mod
from hpatool.engine.scoring.model_source import (
    ModelSource,
    ensemble_thresholds,
    resolve_sources,
    resolve_thresholds,
    uses_oof_thresholds,
    with_threshold_file,
)
from hpatool.engine.scoring.score import CheckedImages, Scores, check_images, score, scoring_dtype
from hpatool.engine.scoring.selection import Candidates, SizeDiffers, ViewMismatch, warn_once
from hpatool.engine.views import Size, View, resolve_view
from hpatool.errors import Interrupted, UsageError
from hpatool.registry import Registry


@dataclass
class ModelView:
    """One model of the scoring: its name (run or checkpoint), checkpoint and view."""

    name: str
    checkpoint: Path
    view: View
    size: Size  # (height, width) of the first readable image
    amp: str | None = None  # the dtype the run trained in (``checkpoint.trained_amp``)

    @property
    def whole_image(self) -> bool:
        """The crop fills the (first) image."""
        return self.view.fills(self.size)

    @property
    def windows(self) -> int:
        return self.view.windows(self.size)

    @property
    def text(self) -> str:
        return self.view.text(self.size)


@dataclass
class Scored:
    """A dataset scored: the probabilities (and failures; for an ensemble, the mean of its
    models' probabilities), how, with what models, on which rank."""

    scores: Scores
    crop: int  # the first model's (all models', unless their training crops differ)
    windows: int  # windows scored per image by the first model (``View.windows``)
    thresholds: np.ndarray
    source: ModelSource  # the first model's
    is_main: bool
    models: list[ModelView] = field(default_factory=list)
    train_frequency: np.ndarray | None = None  # the models' mean training class frequency
    sources: list[ModelSource] = field(default_factory=list)  # every model's
    cached: bool = False  # the images were read from the dataset's decoded cache

    @property
    def view(self) -> View:
        return self.models[0].view

    @property
    def scoring_text(self) -> str:
        """How the images were scored: one model's view, or each model's when they differ."""
        texts = {m.text for m in self.models}
        if len(texts) == 1:
            return next(iter(texts))
        return "; ".join(f"{m.name}: {m.text}" for m in self.models)

    @property
    def model_text(self) -> str:
        """The checkpoint file, or ``ensemble of 3 models (EXP-f0, EXP-f1, EXP-f2)`` (with
        each model's weight when they differ: ``a x0.50, b x0.25, ...``)."""
        if len(self.models) == 1:
            return str(self.models[0].checkpoint)
        weights = [s.weight for s in self.sources]
        if len(set(weights)) > 1 and len(weights) == len(self.models):
            names = [f"{m.name} x{w:.2f}" for m, w in zip(self.models, weights, strict=True)]
        else:
            names = [m.name for m in self.models]
        return f"ensemble of {len(self.models)} models ({', '.join(names)})"


#: Called once every check has passed, right before scoring, with the samples to score.
BeforeScoring = Callable[[Candidates], None]


def _check_input_size(arch: str, crop_size: int | None) -> None:
    """Whether the model's architecture can take ``--crop-size`` inputs (the run's own
    training crop it took already), before any image is read."""
    from hpatool.engine.models.input_size import check_input_size

    if crop_size is None:
        return
    try:
        check_input_size(arch, crop_size)
    except UsageError as exc:
        raise UsageError(f"--crop-size {crop_size} does not fit the model: {exc}") from None


def _warn_sizes(
    models: list[ModelView], specs: list[Any], config: PredictConfig, dataset: str
) -> None:
    """One ``SizeDiffers`` line when a model trained on images of another size than the
    scored dataset's (its ``ModelSpec.image_size``), and one when ``--crops`` asks for several
    views of a crop that fills the image (every random crop is then the same window)."""
    for m, spec in zip(models, specs, strict=True):
        trained = tuple(spec.image_size) if spec.image_size else None
        if trained is not None and trained != tuple(m.size):
            th, tw = trained
            warn_once(
                f"{m.name} trained on {tw}x{th} images and scores dataset {dataset!r}'s "
                f"{m.size[1]}x{m.size[0]} ones: the cells are at another scale than it learnt "
                f"({m.text}); resize the dataset to {tw} px ('hpatool preprocess --size {tw}') "
                "or use a model trained at this size",
                SizeDiffers,
            )
            break
    for m in models:
        if config.crops is not None and config.crops > 1 and m.windows == 1:
            warn_once(
                f"--crops {config.crops}: {m.name}'s {m.view.crop}px crop is the whole "
                f"{m.size[1]}x{m.size[0]} image, so every crop is the same window ({m.text}); "
                "use --tta flips for several views of it",
                SizeDiffers,
            )
            break


def _warn_view_mismatch(
    models: list[ModelView],
    sources: list[ModelSource],
    on_oof: list[bool],
    checked: CheckedImages,
) -> None:
    """One ``ViewMismatch`` line when a model scores with another view than its thresholds
    were tuned on (``thresholds.json``'s ``view``, ``"tuned_on": "oof"``; ``on_oof``: whether
    the model's thresholds are those). Views that score alike (the same text: ``the centre
    crop`` whatever the aggregation) do not differ."""
    differ: list[tuple[str, str, str]] = []
    for m, source, oof in zip(models, sources, on_oof, strict=True):
        tuned = source.tuned_view() if oof else None
        if tuned is None or tuned == m.view:
            continue
        tuned_text = tuned.text(checked.size)
        if tuned_text != m.text:
            differ.append((m.name, tuned_text, m.text))
    if not differ:
        return
    name, tuned_text, used = differ[0]
    whose = "the run's view" if len(models) == 1 else "each run's view (leave out the options)"
    more = f" (and {len(differ) - 1} more of the ensemble's models)" if len(differ) > 1 else ""
    owner = "" if len(models) == 1 else f"{name}'s "
    warn_once(
        f"{owner}thresholds were tuned on {tuned_text}; scoring with {used}{more}: pass "
        f"--threshold with a number, or {whose}",
        ViewMismatch,
    )


def _score_dataset(
    reg: Registry,
    cands: Candidates,
    config: PredictConfig,
    *,
    strict: bool,
    progress: ProgressFn | None,
    before: BeforeScoring,
    both: bool = False,
) -> Scored:
    """Find the models and their thresholds, check every input once for all models (each
    architecture takes the crop, every image's header is readable and fits the crops), call
    ``before``, then score ``cands.items`` with each model in turn (sharded under torchrun; each
    freed before the next), average the models' probabilities and gather on rank 0."""

    from hpatool.engine.distributed import DistContext, resolve_device

    sources = resolve_sources(reg, config)
    ctx = DistContext.from_env()
    dev = resolve_device(config.device, ctx)
    ctx.init(dev)
    try:
        ckpts, specs, amps = _load_sources(sources, config.crop_size)
        if len(sources) == 1:
            thresholds = resolve_thresholds(config.threshold, sources[0], ckpts[0])
        else:
            thresholds = ensemble_thresholds(reg, config.threshold, sources, ckpts)
        thresholds = with_threshold_file(config.threshold, thresholds)
        trained_crop = max(spec.crop for spec in specs)
        cache = _use_cache(reg, cands, config.cache)
        sizes = cache.sizes if cache is not None else None
        checked = check_images(cands.items, config.crop_size, trained_crop, cands.dataset, sizes)
        models = []
        for source, spec, amp in zip(sources, specs, amps, strict=True):
            crop = config.crop_size if config.crop_size is not None else spec.crop
            view = resolve_view(crop, config.crops, config.agg, config.tta, source.stored_view())
            models.append(ModelView(source.name, source.checkpoint, view, checked.size, amp))
        cands.apply(checked)
        cands.require_some()
        if parse_threshold(config.threshold) is None:
            tuned = [uses_oof_thresholds(s, c) for s, c in zip(sources, ckpts, strict=True)]
            _warn_view_mismatch(models, sources, tuned, checked)
        _warn_sizes(models, specs, config, cands.dataset)
        before(cands)
        run = _Scoring(cands, config, strict, progress, both, dev, ctx)
        parts = [
            run.one(k, source, spec, m, ckpts)
            for k, (source, spec, m) in enumerate(zip(sources, specs, models, strict=True))
        ]
        local = average_scores(parts, [s.weight for s in sources])
        merged = Scores()
        for part in ctx.gather(local):
            merged.update(part)
        train_frequency = _mean_class_frequency(sources)
        return Scored(
            merged,
            models[0].view.crop,
            models[0].windows,
            thresholds,
            sources[0],
            ctx.is_main,
            models,
            train_frequency,
            sources,
            cache is not None,
        )
    finally:
        ctx.destroy()


@dataclass
class _Scoring:
    """How each model of one scoring runs: the samples, the options, the device and ranks."""

    cands: Candidates
    config: PredictConfig
    strict: bool
    progress: ProgressFn | None
    both: bool
    dev: Any  # torch.device
    ctx: Any  # DistContext

    def one(
        self, k: int, source: ModelSource, spec: Any, m: ModelView, ckpts: list[dict[str, Any]]
    ) -> Scores:
        """Model ``k``'s scores (its checkpoint built, scored, freed before the next)."""
        import torch

        config, dev, ctx, models = self.config, self.dev, self.ctx, len(ckpts)
        built = ckpts[k] if models == 1 else source.checkpoint
        model, _ = ckpt_mod.build_model_from_checkpoint(built, dev, source.checkpoint)
        # channels_last is faster on CUDA and, through oneDNN, on the CPU too (resnet50 at
        # 256: 7.6-7.9 vs 6.4-6.6 crops/s on the 2-core development machine).
        model = model.to(memory_format=torch.channels_last)
        part = score(
            model,
            self.cands.items,
            m.view,
            mean=spec.mean,
            std=spec.std,
            batch_size=config.batch_size,
            workers=config.workers,
            device=dev,
            seed=config.seed,
            strict=self.strict,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=_model_progress(self.progress, k, models) if ctx.is_main else None,
            both=self.both,
            amp_dtype=scoring_dtype(m.amp, dev),
            model_name=f"run {m.name}" if source.run is not None else m.name,
        )
        del model
        ckpts[k] = {}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return part


def _mean_class_frequency(sources: list[ModelSource]) -> np.ndarray | None:
    """The models' mean training class frequency; ``None`` if a model does not record one."""
    frequencies = [s.class_frequency() for s in sources]
    if any(f is None for f in frequencies):
        return None
    return np.mean([f for f in frequencies if f is not None], axis=0)


def _load_sources(
    sources: list[ModelSource], crop_size: int | None
) -> tuple[list[dict[str, Any]], list[Any], list[str | None]]:
    """Each model's checkpoint (an ensemble's: only what its thresholds need, its models load
    one at a time while scoring), spec and training dtype; each architecture checked against
    ``--crop-size`` before any image is read."""
    ckpts: list[dict[str, Any]] = []
    specs = []
    amps: list[str | None] = []
    for source in sources:
        ckpt = ckpt_mod.load_checkpoint(source.checkpoint)
        spec = ckpt_mod.model_spec(ckpt)
        amps.append(ckpt_mod.trained_amp(ckpt))
        _check_input_size(spec.arch, crop_size)
        specs.append(spec)
        ckpts.append(
            ckpt
            if len(sources) == 1
            else {k: ckpt.get(k) for k in ("thresholds", "epoch") if k in ckpt}
        )
        del ckpt
    return ckpts, specs, amps


def _use_cache(reg: Registry, cands: Candidates, mode: str) -> CacheView | None:
    """The dataset's decoded cache (``data.cache.use_cache``), its items pointed at it."""
    cache = use_cache(reg, cands.dataset, mode)
    if cache is not None:
        cands.items = [dataclasses.replace(t, cache=cache.path(t.id)) for t in cands.items]
    return cache


def _model_progress(progress: ProgressFn | None, k: int, models: int) -> ProgressFn | None:
    """Model ``k``'s progress as part of one bar for all ``models``."""
    if progress is None or models == 1:
        return progress

    def report(done: int, total: int) -> None:
        progress(k * total + done, models * total)

    return report


def average_scores(parts: list[Scores], weights: list[float] | None = None) -> Scores:
    """The models' scores of the same images put together: the mean of their probabilities
    (float64; weighted by ``weights`` when they differ) for the images every model scored; an
    image that failed for any model fails."""
    if len(parts) == 1:
        return parts[0]
    w = None if weights is None or len(set(weights)) == 1 else weights
    out = Scores()
    for part in parts:
        out.failures.update(part.failures)
    for idx in parts[0].probs:
        if idx in out.failures or any(idx not in p.probs for p in parts):
            continue
        out.probs[idx] = np.average([p.probs[idx] for p in parts], axis=0, weights=w)
        if all(idx in p.other for p in parts):
            out.other[idx] = np.average([p.other[idx] for p in parts], axis=0, weights=w)
    return out


def score_or_stop(
    reg: Registry,
    cands: Candidates,
    config: PredictConfig,
    *,
    strict: bool,
    progress: ProgressFn | None,
    before: BeforeScoring,
    both: bool = False,
) -> Scored:
    """``_score_dataset``, with SIGTERM stopping it as Ctrl-C does: one line, exit 143 (130)."""
    from hpatool.signals import sigterm_as_interrupt, stop_code, stop_reason

    try:
        with sigterm_as_interrupt():
            return _score_dataset(
                reg, cands, config, strict=strict, progress=progress, before=before, both=both
            )
    except (KeyboardInterrupt, Interrupted) as exc:
        code = stop_code(exc)
        why = stop_reason(code)
        raise Interrupted(
            f"{why} while scoring: no file was written; run the command again", code
        ) from None


def dataset_name(config: PredictConfig) -> str:
    config.validate()
    assert config.dataset is not None  # validate() says so
    return config.dataset
