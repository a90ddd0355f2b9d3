"""``hpatool predict``: score a dataset with a trained model (or an ensemble: the scoring it
shares with ``hpatool evaluate``, ``hpatool.engine.scoring.ensemble``) and write a Kaggle submission
(and probabilities).

Every sample keeps its row in the submission: those whose images are not there get no labels
(one ``LeftOut`` warning); ``--known-labels`` gives a sample its labelled duplicates' labels.
Every output file is checked before any scoring; only rank 0 writes them. Images that cannot be
read leave ``.partial`` and ``.failures`` files instead of the submission. ``predict`` ends with
a ``FrequencyDrift`` warning when a class is predicted far more (or less) often than it occurs
in the training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine.config import PredictConfig
from hpatool.engine.parsing import parse_prior
from hpatool.engine.scoring.ensemble import Scored, dataset_name, score_or_stop
from hpatool.engine.scoring.predict_files import (
    check_predict_outputs,
    failures_path_for,
    partial_path,
    write_failures,
    write_probabilities,
    write_submission,
)
from hpatool.engine.scoring.prior import PriorMatch, match_prior
from hpatool.engine.scoring.score import ScoreItem, decide_labels
from hpatool.engine.scoring.selection import (
    Candidates,
    FrequencyDrift,
    LeftOut,
    available,
    warn_once,
)
from hpatool.errors import DataError, UsageError, WorkFailed
from hpatool.outputs import Inputs
from hpatool.registry import Registry


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
    windows: int = 0  # windows scored per image (``View.windows``), by the first model
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
    cached: bool = False  # the images were read from the dataset's decoded cache
    prior: PriorMatch | None = None  # --threshold prior: the target and predicted shares

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
    result = _result(dataset, cands, scored)
    if scored.is_main:
        prior = parse_prior(config.threshold)
        if prior is not None:
            result.prior = _match_prior(prior, scored)
        _write_predictions(result, all_items, scored, config.min_labels, out, probs_out, known)
    return result


def _match_prior(prior: Path | str, scored: Scored) -> PriorMatch:
    """``--threshold prior``: the thresholds matched to the target shares on the scored
    images replace ``scored.thresholds`` (the tuned ones are their fallback)."""
    got = scored.scores.probs
    probs = (
        np.stack([got[i] for i in sorted(got)]) if got else np.zeros((0, len(scored.thresholds)))
    )
    match = match_prior(prior, probs, scored.thresholds, scored.train_frequency)
    scored.thresholds = match.thresholds
    return match


def _result(dataset: str, cands: Candidates, scored: Scored) -> PredictResult:
    """What was scored, before the files are written (``_write_predictions`` adds them)."""
    return PredictResult(
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
        cached=scored.cached,
    )


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
    drift = (
        frequency_drift(
            [lab for t, lab in zip(rows, labels, strict=True) if t.index in got],
            scored.train_frequency,
        )
        if result.prior is None
        else ""
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
        f"{shown}{more}; check the thresholds (thresholds.json; an ensemble's are tuned on its "
        "runs' oof.csv) or pass --threshold 0.5"
    )
