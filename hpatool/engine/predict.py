"""``hpatool predict``, and the scoring it shares with ``hpatool evaluate``
(``hpatool.engine.evaluate``): score a dataset with a trained model and write a Kaggle
submission (and probabilities).

Both score images the same way (``hpatool.engine.scoring``: views, aggregation, thresholds,
``--min-labels``) with the models that ``hpatool.engine.model_source`` finds: one, or an
ensemble (``--run A --run B``, ``--experiment EXP``) whose models score one after another, each
with its own view and the same seed, and whose probabilities are averaged. Every check (the
images' headers, the output files, the architectures' input sizes) is made once for all models
before any scores. Each model's view is the one stored with its thresholds unless
``--crops``/``--agg``/``--tta``/``--crop-size`` say otherwise (then one ``ViewMismatch``
warning); ``predict`` ends with a ``FrequencyDrift`` warning when a class is predicted far more
(or less) often than it occurs in the training data. Under ``torchrun`` each rank scores its
share with each model and rank 0 gathers the averaged probabilities and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine import checkpoint as ckpt_mod
from hpatool.engine.config import PredictConfig, parse_threshold
from hpatool.engine.model_source import (
    ModelSource,
    ensemble_thresholds,
    resolve_sources,
    resolve_thresholds,
    uses_oof_thresholds,
)
from hpatool.engine.predict_files import (
    check_predict_outputs,
    failures_path_for,
    partial_path,
    write_failures,
    write_probabilities,
    write_submission,
)
from hpatool.engine.scoring import (
    CheckedImages,
    ScoreItem,
    Scores,
    View,
    check_images,
    decide_labels,
    resolve_view,
    score,
    stored_as_view,
)
from hpatool.engine.selection import (
    Candidates,
    FrequencyDrift,
    LeftOut,
    ViewMismatch,
    available,
    warn_once,
)
from hpatool.errors import DataError, Interrupted, UsageError, WorkFailed
from hpatool.outputs import Inputs
from hpatool.registry import Registry

# ------------------------------------------------------------------------------------ scoring


@dataclass
class ModelView:
    """One model of the scoring: its name (run or checkpoint), checkpoint and view."""

    name: str
    checkpoint: Path
    view: View
    whole_image: bool  # the crop fills the (first) image

    @property
    def windows(self) -> int:
        return self.view.windows(self.whole_image)

    @property
    def text(self) -> str:
        return self.view.text(self.whole_image)


@dataclass
class Scored:
    """A dataset scored: the probabilities (and failures; for an ensemble, the mean of its
    models' probabilities), how, with what models, on which rank."""

    scores: Scores
    crop: int  # the first model's (all models', unless their training crops differ)
    windows: int  # windows scored per image by the first model (see ``n_views``)
    thresholds: np.ndarray
    source: ModelSource  # the first model's
    is_main: bool
    models: list[ModelView] = field(default_factory=list)
    train_frequency: np.ndarray | None = None  # the models' mean training class frequency

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
        """The checkpoint file, or ``ensemble of 3 models (EXP-f0, EXP-f1, EXP-f2)``."""
        if len(self.models) == 1:
            return str(self.models[0].checkpoint)
        return f"ensemble of {len(self.models)} models ({', '.join(m.name for m in self.models)})"


#: Called once every check has passed, right before scoring, with the samples to score.
BeforeScoring = Callable[[Candidates], None]


def _check_input_size(arch: str, crop_size: int | None) -> None:
    """Whether the model's architecture can take ``--crop-size`` inputs (the run's own
    training crop it took already), before any image is read."""
    from hpatool.models import check_input_size

    if crop_size is None:
        return
    try:
        check_input_size(arch, crop_size)
    except UsageError as exc:
        raise UsageError(f"--crop-size {crop_size} does not fit the model: {exc}") from None


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
        stored = source.tuned_view() if oof else None
        tuned = stored_as_view(stored, m.view.crop) if stored is not None else None
        if tuned is None or tuned == m.view:
            continue
        tuned_text = tuned.text(checked.fills(tuned.crop))
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
    import torch

    from hpatool.engine.distributed import DistContext, resolve_device

    sources = resolve_sources(reg, config)
    ctx = DistContext.from_env()
    dev = resolve_device(config.device, ctx)
    ctx.init(dev)
    try:
        ckpts: list[dict[str, Any]] = []
        specs = []
        for source in sources:
            ckpt = ckpt_mod.load_checkpoint(source.checkpoint)
            spec = ckpt_mod.model_spec(ckpt)
            _check_input_size(spec.arch, config.crop_size)
            specs.append(spec)
            # an ensemble keeps only what the thresholds need: its models load one at a time
            ckpts.append(
                ckpt
                if len(sources) == 1
                else {k: ckpt.get(k) for k in ("thresholds", "epoch") if k in ckpt}
            )
            del ckpt
        if len(sources) == 1:
            thresholds = resolve_thresholds(config.threshold, sources[0], ckpts[0])
        else:
            thresholds = ensemble_thresholds(reg, config.threshold, sources, ckpts)
        trained_crop = max(spec.crop for spec in specs)
        checked = check_images(cands.items, config.crop_size, trained_crop, cands.dataset)
        models = []
        for source, spec in zip(sources, specs, strict=True):
            crop = config.crop_size if config.crop_size is not None else spec.crop
            view = resolve_view(crop, config.crops, config.agg, config.tta, source.stored_view())
            models.append(ModelView(source.name, source.checkpoint, view, checked.fills(crop)))
        cands.apply(checked)
        cands.require_some()
        if parse_threshold(config.threshold) is None:
            tuned = [uses_oof_thresholds(s, c) for s, c in zip(sources, ckpts, strict=True)]
            _warn_view_mismatch(models, sources, tuned, checked)
        before(cands)
        parts: list[Scores] = []
        for k, (source, spec, m) in enumerate(zip(sources, specs, models, strict=True)):
            built = ckpts[k] if len(sources) == 1 else source.checkpoint
            model, _ = ckpt_mod.build_model_from_checkpoint(built, device=dev)
            # channels_last is faster on CUDA and, through oneDNN, on the CPU too (resnet50 at
            # 256: 7.6-7.9 vs 6.4-6.6 crops/s on the 2-core development machine).
            model = model.to(memory_format=torch.channels_last)
            parts.append(
                score(
                    model,
                    cands.items,
                    crop=m.view.crop,
                    crops=m.view.crops,
                    agg=m.view.agg,
                    tta=m.view.tta,
                    mean=spec.mean,
                    std=spec.std,
                    batch_size=config.batch_size,
                    workers=config.workers,
                    device=dev,
                    seed=config.seed,
                    strict=strict,
                    rank=ctx.rank,
                    world_size=ctx.world_size,
                    progress=_model_progress(progress, k, len(sources)) if ctx.is_main else None,
                    both=both,
                )
            )
            del model
            ckpts[k] = {}
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        local = average_scores(parts)
        merged = Scores()
        for part in ctx.gather(local):
            merged.update(part)
        frequencies = [s.class_frequency() for s in sources]
        train_frequency = (
            np.mean([f for f in frequencies if f is not None], axis=0)
            if all(f is not None for f in frequencies)
            else None
        )
        return Scored(
            merged,
            models[0].view.crop,
            models[0].windows,
            thresholds,
            sources[0],
            ctx.is_main,
            models,
            train_frequency,
        )
    finally:
        ctx.destroy()


def _model_progress(progress: ProgressFn | None, k: int, models: int) -> ProgressFn | None:
    """Model ``k``'s progress as part of one bar for all ``models``."""
    if progress is None or models == 1:
        return progress

    def report(done: int, total: int) -> None:
        progress(k * total + done, models * total)

    return report


def average_scores(parts: list[Scores]) -> Scores:
    """The models' scores of the same images put together: the mean of their probabilities
    (float64) for the images every model scored; an image that failed for any model fails."""
    if len(parts) == 1:
        return parts[0]
    out = Scores()
    for part in parts:
        out.failures.update(part.failures)
    for idx in parts[0].probs:
        if idx in out.failures or any(idx not in p.probs for p in parts):
            continue
        out.probs[idx] = np.mean([p.probs[idx] for p in parts], axis=0)
        if all(idx in p.other for p in parts):
            out.other[idx] = np.mean([p.other[idx] for p in parts], axis=0)
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
    from hpatool.convert.pool import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return _score_dataset(
                reg, cands, config, strict=strict, progress=progress, before=before, both=both
            )
    except (KeyboardInterrupt, Interrupted) as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        why = "terminated (SIGTERM)" if code == 143 else "interrupted"
        raise Interrupted(
            f"{why} while scoring: no file was written; run the command again", code
        ) from None


def dataset_name(config: PredictConfig) -> str:
    config.validate()
    assert config.dataset is not None  # validate() says so
    return config.dataset


# ------------------------------------------------------------------------------------ predict


@dataclass
class PredictResult:
    dataset: str
    checkpoint: Path
    samples: int
    scored: int
    failures: dict[str, str]
    submission: Path | None
    probs: Path | None
    partial: Path | None
    crop: int
    crops: int
    agg: str
    label_counts: dict[int, int]
    is_main: bool = True
    windows: int = 0  # windows scored per image (``scoring.n_views``), by the first model
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count, before scoring
    #: with ``--known-labels``: the samples that took their labelled duplicates' labels
    known_labels: int | None = None
    tta: str = "crops"
    #: how the images were scored, in words: ``max of 8 crops of 256px``, ``the centre crop
    #: of 256px``, ``1 window of 512px (the whole image)``, ...
    scoring_text: str = ""
    #: the checkpoint file, or ``ensemble of 3 models (EXP-f0, EXP-f1, EXP-f2)``
    model_text: str = ""
    models: list[str] = field(default_factory=list)  # the runs (or checkpoint files) scoring

    @property
    def n_left_out(self) -> int:
        return sum(self.left_out.values())


def predict(
    reg: Registry,
    config: PredictConfig,
    progress: ProgressFn | None = None,
    inputs: Inputs = (),
) -> PredictResult:
    """Score every sample of ``config.dataset`` and write a Kaggle submission to ``config.out``
    (and the probabilities to ``config.probs``).

    Before any scoring, the samples whose images are not there (``hpatool.availability``) are
    found: they are named in one ``LeftOut`` warning and keep their row in the submission,
    with no labels (Kaggle wants every Id), and no row in the probabilities; with
    ``config.strict`` any of them stops the command before scoring. Every header is read
    then too. If an image cannot be read (its header before scoring, or its body while it is
    scored), the others are written to ``<out stem>.partial.csv``
    (and ``<probs stem>.partial.csv``), ``out`` itself is not written, and ``WorkFailed`` is
    raised after the files are down; with ``config.strict`` the first such image stops
    everything. Every file it may write is checked first (``hpatool.outputs``); ``inputs``
    are the command's own input files (``--config``), never to be written over.
    """
    dataset = dataset_name(config)
    out, probs_out = check_predict_outputs(reg, config, inputs)
    cands = available(reg, dataset, list(enumerate(reg.samples(dataset))), repr(dataset))
    all_items = [*cands.items, *(ScoreItem(i, Path(), sid) for i, sid in cands.left.items())]
    all_items.sort(key=lambda t: t.index)
    out_name = Path(str(config.out)).name
    known = known_labels(reg, dataset) if config.known_labels else None  # before any scoring

    def before(c: Candidates) -> None:
        if not c.left_out:
            return
        if config.strict:
            raise DataError(
                f"{c.summary()}; --strict scores only a whole dataset: restore the files "
                f"('hpatool datasets verify {dataset}' lists them) or leave out --strict"
            )
        if len(c.errors) == len(c.left):
            return  # all of them unreadable: failures, named in the error at the end
        warn_once(
            f"{c.summary()}; their rows in {out_name} get no labels; scoring the other "
            f"{len(c.items):,}",
            LeftOut,
        )

    if config.strict:
        before(cands)  # refuse before even loading the model
    scored = score_or_stop(
        reg, cands, config, strict=config.strict, progress=progress, before=before
    )
    result = PredictResult(
        dataset=dataset,
        checkpoint=scored.source.checkpoint,
        samples=cands.total,
        scored=len(scored.scores.probs),
        # images that exist but cannot be read (found before scoring, or while scored) fail
        # the command as before (partial and failures files, exit 1); only images that are
        # not there at all are merely left out
        failures={
            **{cands.left[i]: error for i, error in cands.errors.items()},
            **{
                t.id: scored.scores.failures[t.index]
                for t in cands.items
                if t.index in scored.scores.failures
            },
        },
        submission=None,
        probs=None,
        partial=None,
        crop=scored.crop,
        crops=scored.view.crops,
        agg=scored.view.agg,
        label_counts={},
        is_main=scored.is_main,
        windows=scored.windows,
        left_out=dict(cands.left_out),
        tta=scored.view.tta,
        scoring_text=scored.scoring_text,
        model_text=scored.model_text,
        models=[m.name for m in scored.models],
    )
    if scored.is_main:
        _write_predictions(result, all_items, scored, config.min_labels, out, probs_out, known)
    return result


def known_labels(reg: Registry, dataset: str) -> dict[str, tuple[int, ...]]:
    """``--known-labels``: for each sample of ``dataset`` in a duplicate cluster (``hpatool
    dedup``) with labelled samples (of any dataset, itself excluded), the union of their
    labels. The public HPA images hold copies of Kaggle test images with their labels."""
    if not reg.dedup_done(dataset):
        raise UsageError(
            f"--known-labels needs the duplicate clusters of {dataset!r}: run 'hpatool dedup "
            f"{dataset} <labelled datasets>' first"
        )
    targets: dict[str, dict[str, tuple[int, ...] | None]] = {}
    known: dict[str, tuple[int, ...]] = {}
    for cluster in reg.clusters():
        members = [(ds, sid) for ds, sid in cluster]
        for ds, _ in members:
            if ds not in targets:
                targets[ds] = {s.id: s.target for s in reg.samples(ds)}
        for ds, sid in members:
            if ds != dataset:
                continue
            labels: set[int] = set()
            for other_ds, other_id in members:
                target = targets[other_ds].get(other_id)
                if (other_ds, other_id) != (ds, sid) and target is not None:
                    labels.update(target)
            if labels:
                known[sid] = tuple(sorted(labels))
    return known


def _write_predictions(
    result: PredictResult,
    items: list[ScoreItem],
    scored: Scored,
    min_labels: int,
    out: Path,
    probs_out: Path | None,
    known: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """Write the submission (``.partial`` if some images failed while scored, with a failures
    file, then raise ``WorkFailed``) and the probabilities; fill in ``result``'s files and label
    counts. ``items`` are every sample of the dataset: those left out before scoring keep
    their row with no labels, and have none in the probabilities."""
    got = scored.scores.probs
    rows = [t for t in items if t.id not in result.failures]
    ids = [t.id for t in rows]
    labels = [
        decide_labels(got[t.index], scored.thresholds, min_labels) if t.index in got else []
        for t in rows
    ]
    drift = frequency_drift(
        [lab for t, lab in zip(rows, labels, strict=True) if t.index in got],
        scored.train_frequency,
    )
    if known is not None:  # --known-labels: a duplicate's labels win over the model's
        labels = [
            list(known[t.id]) if t.id in known else lab for t, lab in zip(rows, labels, strict=True)
        ]
        result.known_labels = sum(1 for t in rows if t.id in known)
    counts: dict[int, int] = {}
    for lab in labels:
        for c in lab:
            counts[c] = counts.get(c, 0) + 1
    result.label_counts = dict(sorted(counts.items()))
    incomplete = bool(result.failures)
    sub_path = write_submission(partial_path(out) if incomplete else out, ids, labels)
    if probs_out is not None:
        with_probs = [t for t in rows if t.index in got]
        result.probs = write_probabilities(
            partial_path(probs_out) if incomplete else probs_out,
            [t.id for t in with_probs],
            [got[t.index] for t in with_probs],
        )
    failures_path = failures_path_for(out)
    if drift:
        warn_once(drift, FrequencyDrift)
    if incomplete:
        result.partial = sub_path
        write_failures(failures_path, result.failures)
        shown = list(result.failures.items())[:3]
        listed = "; ".join(f"{i}: {e}" for i, e in shown)
        more = f"; and {len(result.failures) - len(shown)} more" if len(result.failures) > 3 else ""
        raise WorkFailed(
            f"{len(result.failures)} of {len(items)} images could not be scored ({listed}{more}; "
            f"all listed in {failures_path}); the other {len(ids)} are in {sub_path}, and {out} "
            "was not written"
        )
    # A complete run: leftovers of an earlier incomplete one would only mislead.
    stale = [partial_path(out), failures_path]
    if probs_out is not None:
        stale.append(partial_path(probs_out))
    for path in stale:
        path.unlink(missing_ok=True)
    result.submission = sub_path


#: ``frequency_drift``'s rule: a predicted share this many times the training share (or the
#: training share this many times the predicted one) ...
DRIFT_RATIO = 3.0
#: ... and at least this far apart (a share of the scored images) ...
DRIFT_GAP = 0.05
#: ... with at least this many images scored.
DRIFT_MIN_IMAGES = 20


def frequency_drift(labels: list[list[int]], train_frequency: np.ndarray | None) -> str:
    """The text of the warning at the end of ``predict`` (``''`` for none): the classes whose
    predicted frequency is far from their training frequency (``config.json``'s
    ``class_frequency``; a run without it gets no warning), at most 3, the farthest first.

    The rule: with at least ``DRIFT_MIN_IMAGES`` (20) images scored, a class's predicted share
    p (of the scored images, labels as the model decided them, before ``--known-labels``) and
    training share q are far apart when ``p > 3 q`` or ``q > 3 p``, and ``|p - q| >= 0.05``
    (5 percentage points). Thresholds tuned on one or two positives used to make a rare class
    the label of 70% of the test images without a word."""
    from hpatool.labels import CLASS_NAMES

    n = len(labels)
    if train_frequency is None or n < DRIFT_MIN_IMAGES:
        return ""
    predicted = np.zeros(len(train_frequency))
    for lab in labels:
        for c in lab:
            predicted[c] += 1
    predicted /= n
    far = [
        c
        for c, (p, q) in enumerate(zip(predicted, train_frequency, strict=True))
        if abs(p - q) >= DRIFT_GAP and (p > DRIFT_RATIO * q or q > DRIFT_RATIO * p)
    ]
    if not far:
        return ""
    far.sort(key=lambda c: -abs(predicted[c] - train_frequency[c]))
    shown = "; ".join(
        f"{c} {CLASS_NAMES[c]} {100 * predicted[c]:.1f}% (training {100 * train_frequency[c]:.1f}%)"
        for c in far[:3]
    )
    more = f"; and {len(far) - 3} more" if len(far) > 3 else ""
    return (
        f"predicted class frequencies far from the training data's, of {n:,} images: "
        f"{shown}{more}; check the thresholds (thresholds.json, or pass --threshold 0.5)"
    )
