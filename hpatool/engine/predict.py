"""``hpatool predict``, and the scoring it shares with ``hpatool evaluate``
(``hpatool.engine.evaluate``): score a dataset with a trained model and write a Kaggle
submission (and probabilities).

Both score images the same way (``hpatool.engine.scoring``: crops, aggregation, thresholds,
``--min-labels``) with the model that ``hpatool.engine.model_source`` finds. Under ``torchrun``
each rank scores its share and rank 0 gathers the probabilities and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine import checkpoint as ckpt_mod
from hpatool.engine.config import PredictConfig
from hpatool.engine.model_source import (
    ModelSource,
    resolve_source,
    resolve_thresholds,
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
    ScoreItem,
    Scores,
    check_images,
    decide_labels,
    score,
    windows_text,
)
from hpatool.engine.selection import (
    Candidates,
    LeftOut,
    available,
    warn_once,
)
from hpatool.errors import DataError, Interrupted, UsageError, WorkFailed
from hpatool.outputs import Inputs
from hpatool.registry import Registry

# ------------------------------------------------------------------------------------ scoring


@dataclass
class Scored:
    """A dataset scored: the probabilities (and failures), how, with what model, on which rank."""

    scores: Scores
    crop: int
    windows: int  # windows scored per image: ``crops``, or 1 if the crop is the image
    thresholds: np.ndarray
    source: ModelSource
    is_main: bool


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
    """Load the model, check every input (the architecture takes the crop, every image's
    header is readable and fits the crop), call ``before``, then score ``cands.items``
    (sharded under torchrun) and gather on rank 0."""
    import torch

    from hpatool.engine.distributed import DistContext, resolve_device

    checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
    source = resolve_source(reg, config.run, checkpoint)
    ctx = DistContext.from_env()
    dev = resolve_device(config.device, ctx)
    ctx.init(dev)
    try:
        ckpt = ckpt_mod.load_checkpoint(source.checkpoint)
        thresholds = resolve_thresholds(config.threshold, source, ckpt)
        model, spec = ckpt_mod.build_model_from_checkpoint(ckpt, device=dev)
        # channels_last is faster on CUDA and, through oneDNN, on the CPU too (resnet50 at 256:
        # 7.6-7.9 vs 6.4-6.6 crops/s on the 2-core development machine).
        model = model.to(memory_format=torch.channels_last)
        _check_input_size(spec.arch, config.crop_size)
        checked = check_images(cands.items, config.crop_size, spec.crop, cands.dataset)
        cands.apply(checked)
        cands.require_some()
        before(cands)
        local = score(
            model,
            cands.items,
            crop=checked.crop,
            crops=config.crops,
            agg=config.agg,
            mean=spec.mean,
            std=spec.std,
            batch_size=config.batch_size,
            workers=config.workers,
            device=dev,
            seed=config.seed,
            strict=strict,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=progress if ctx.is_main else None,
            both=both,
        )
        merged = Scores()
        for part in ctx.gather(local):
            merged.update(part)
        windows = 1 if checked.whole_image else config.crops
        return Scored(merged, checked.crop, windows, thresholds, source, ctx.is_main)
    finally:
        ctx.destroy()


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
    windows: int = 0  # windows scored per image: ``crops``, or 1 if the crop is the image
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count, before scoring
    #: with ``--known-labels``: the samples that took their labelled duplicates' labels
    known_labels: int | None = None

    @property
    def scoring_text(self) -> str:  # ``max of 8 crops of 256px`` or ``1 window of 512px ...``
        return windows_text(self.agg, self.crops, self.crop, self.windows)

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
        crops=config.crops,
        agg=config.agg,
        label_counts={},
        is_main=scored.is_main,
        windows=scored.windows,
        left_out=dict(cands.left_out),
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
