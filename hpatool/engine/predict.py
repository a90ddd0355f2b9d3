"""Prediction with crop test-time augmentation, submissions, and per-class evaluation.

Each image is scored on ``crops`` random ``crop x crop`` windows in one batched forward pass; the
sigmoid probabilities are aggregated over the crops by ``max`` or ``mean``. The windows of
sample ``i`` are drawn from ``numpy.random.default_rng([seed, i])``, so they depend only on the
seed and the sample's position in the dataset: the same command gives the same file, and a
``torchrun`` run gives the same file as one process. Under ``torchrun`` the images are cut into
batches of ``batch_size`` in dataset order and rank ``r`` scores batches ``r, r + world, ...``,
so every batch has the same composition whatever the number of processes (and so the same
floating-point results); rank 0 gathers the probabilities and writes the files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpatool._io import ProgressFn, check_output_file, write_text_atomic
from hpatool.engine import checkpoint as ckpt_mod
from hpatool.engine.metrics import DEFAULT_THRESHOLD, apply_thresholds
from hpatool.errors import DataError, NotFound, UsageError, WorkFailed
from hpatool.labels import CLASS_NAMES, NUM_CLASSES, format_target
from hpatool.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

AGGREGATIONS = ("max", "mean")
THRESHOLDS_FILE = ckpt_mod.THRESHOLDS_FILE


# ------------------------------------------------------------------------------ model source


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a checkpoint file and, if known, its run and thresholds."""

    checkpoint: Path
    run: str | None
    thresholds_file: Path | None


def resolve_source(reg: Registry, run: str | None, checkpoint: Path | None) -> ModelSource:
    """``--run RUN`` (its best checkpoint, else its last) or ``--checkpoint PATH``, not both."""
    if (run is None) == (checkpoint is None):
        raise UsageError("give exactly one of --run RUN or --checkpoint PATH")
    if run is not None:
        record = reg.run(run)
        for name in (ckpt_mod.BEST, ckpt_mod.LAST):
            path = record.out_dir / name
            if path.is_file():
                thresholds = record.out_dir / THRESHOLDS_FILE
                return ModelSource(path, run, thresholds if thresholds.is_file() else None)
        raise NotFound(
            f"run {run!r} has no checkpoint in {record.out_dir} (looked for {ckpt_mod.BEST} and "
            f"{ckpt_mod.LAST}); train it first or pass --checkpoint PATH"
        )
    assert checkpoint is not None
    if not checkpoint.is_file():
        raise NotFound(f"{checkpoint}: no such checkpoint file")
    thresholds = checkpoint.parent / THRESHOLDS_FILE
    return ModelSource(checkpoint, None, thresholds if thresholds.is_file() else None)


def resolve_thresholds(
    threshold: str | float, source: ModelSource, ckpt: dict[str, Any]
) -> np.ndarray:
    """Per-class thresholds: ``auto`` = the run's tuned ones, or one float for every class."""
    if not isinstance(threshold, str) or threshold.strip().lower() != "auto":
        try:
            value = float(threshold)
        except ValueError:
            raise UsageError(
                f"--threshold {threshold!r} is invalid; use 'auto' or a number in (0, 1)"
            ) from None
        if not 0.0 < value < 1.0:
            raise UsageError(f"--threshold {value} is out of range; use a number in (0, 1)")
        return np.full(NUM_CLASSES, value)
    # The checkpoint's own thresholds (tuned at the epoch it holds) come first: thresholds.json
    # belongs to the best epoch, so it would be wrong for checkpoint-last.pt of a later epoch.
    values: Any = ckpt.get("thresholds")
    origin = str(source.checkpoint)
    if values is None and source.thresholds_file is not None:
        origin = str(source.thresholds_file)
        try:
            doc = json.loads(source.thresholds_file.read_text(encoding="utf-8"))
            values = doc["thresholds"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{source.thresholds_file}: unreadable thresholds ({exc})") from None
    if values is None:
        raise UsageError(
            f"{source.checkpoint}: no tuned thresholds (none in the checkpoint, no "
            f"{THRESHOLDS_FILE} beside it); pass --threshold 0.5 or another number"
        )
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{origin}: thresholds are not numbers ({exc})") from None
    if arr.shape != (NUM_CLASSES,):
        raise DataError(f"{origin}: thresholds hold {arr.size} values, expected {NUM_CLASSES}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise DataError(
            f"{origin}: thresholds must lie in 0..1; pass --threshold 0.5 to use one number"
        )
    return arr


# ------------------------------------------------------------------------------ crop scoring


@dataclass(frozen=True)
class Target:
    """One image to score: its position in the dataset, folder and id."""

    index: int
    root: Path
    id: str


def crop_windows(
    index: int, height: int, width: int, crop: int, crops: int, seed: int
) -> list[tuple[int, int]]:
    """``crops`` (top, left) corners for sample ``index``; one window if the crop fills it."""
    if crop >= height and crop >= width:
        return [(0, 0)]
    rng = np.random.default_rng([seed, index])
    tops = rng.integers(0, height - crop + 1, size=crops)
    lefts = rng.integers(0, width - crop + 1, size=crops)
    return [(int(t), int(left)) for t, left in zip(tops, lefts, strict=True)]


class CropDataset:
    """``(4, H, W)`` samples cut into their TTA crops: item ``i`` is ``(n_crops, 4, c, c)``.

    A sample that cannot be read comes back as ``None`` plus the error text, so one bad file
    doesn't stop the others (the caller decides whether to stop).
    """

    def __init__(
        self,
        targets: Sequence[Target],
        crop: int,
        crops: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.targets = list(targets)
        self.crop = crop
        self.crops = crops
        self.seed = seed
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        import torch

        from hpatool.data.transforms import to_tensor
        from hpatool.imaging import read_sample

        t = self.targets[i]
        try:
            img = read_sample(t.root, t.id)
        except DataError as exc:
            return t.index, None, str(exc)
        _, h, w = img.shape
        if self.crop > min(h, w):
            return t.index, None, f"image is {w}x{h}, smaller than the {self.crop} crop"
        windows = crop_windows(t.index, h, w, self.crop, self.crops, self.seed)
        c = self.crop
        stack = np.stack([img[:, top : top + c, left : left + c] for top, left in windows])
        return t.index, torch.stack([to_tensor(x, self.mean, self.std) for x in stack]), None


def _collate(
    batch: list[tuple[int, torch.Tensor | None, str | None]],
) -> list[tuple[int, torch.Tensor | None, str | None]]:
    return batch


@dataclass
class Scores:
    """Aggregated probabilities by dataset position, and the samples that failed."""

    probs: dict[int, np.ndarray] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


def score(
    model: nn.Module,
    targets: Sequence[Target],
    *,
    crop: int,
    crops: int,
    agg: str,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    device: torch.device,
    seed: int,
    strict: bool = False,
    rank: int = 0,
    world_size: int = 1,
    progress: ProgressFn | None = None,
) -> Scores:
    """Score this rank's share of ``targets`` (see the module docstring); returns local scores."""
    import torch
    from torch.utils.data import DataLoader, Subset

    if agg not in AGGREGATIONS:
        raise UsageError(f"--agg {agg!r} is invalid; use max or mean")
    dataset = CropDataset(targets, crop, crops, seed, mean, std)
    batches = [
        list(range(s, min(s + batch_size, len(targets))))
        for s in range(0, len(targets), batch_size)
    ]
    mine = [i for b in batches[rank::world_size] for i in b]
    loader: DataLoader[Any] = DataLoader(
        Subset(dataset, mine),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    out = Scores()
    done = 0
    with torch.inference_mode():
        for batch in loader:
            good = [(idx, x) for idx, x, _ in batch if x is not None]
            for idx, x, error in batch:
                if x is None:
                    if strict:
                        raise DataError(error or "unreadable image")
                    out.failures[idx] = error or "unreadable"
            if good:
                counts = [x.shape[0] for _, x in good]
                inputs = torch.cat([x for _, x in good]).to(device, non_blocking=True)
                inputs = inputs.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits = model(inputs)
                probs = torch.sigmoid(logits.float()).cpu()
                for (idx, _), part in zip(good, torch.split(probs, counts), strict=True):
                    agg_probs = part.max(dim=0).values if agg == "max" else part.mean(dim=0)
                    out.probs[idx] = agg_probs.numpy().astype(np.float64)
            done += len(batch)
            if progress:
                progress(done, len(mine))
    return out


# --------------------------------------------------------------------------- labels and files


def decide_labels(probs: np.ndarray, thresholds: np.ndarray, min_labels: int) -> list[int]:
    """Classes at or above their threshold; topped up with the most probable to ``min_labels``."""
    chosen = set(np.flatnonzero(apply_thresholds(probs, thresholds)).tolist())
    if len(chosen) < min_labels:
        for c in np.argsort(-probs, kind="stable"):
            if len(chosen) >= min_labels:
                break
            chosen.add(int(c))
    return sorted(chosen)


def submission_text(ids: Sequence[str], labels: Sequence[Sequence[int]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", "Predicted"])
    for sample_id, lab in zip(ids, labels, strict=True):
        writer.writerow([sample_id, format_target(lab)])
    return buf.getvalue()


def probs_text(ids: Sequence[str], probs: Sequence[np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", *[str(c) for c in range(NUM_CLASSES)]])
    for sample_id, p in zip(ids, probs, strict=True):
        writer.writerow([sample_id, *[f"{v:.6f}" for v in p]])
    return buf.getvalue()


def partial_path(path: Path) -> Path:
    """``submission.csv`` -> ``submission.partial.csv``."""
    return path.with_name(f"{path.stem}.partial{path.suffix or '.csv'}")


def failures_path_for(path: Path) -> Path:
    """``submission.csv`` -> ``submission.failures.csv``: the images that could not be scored."""
    return path.with_name(f"{path.stem}.failures.csv")


def failures_text(failures: dict[str, str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", "error"])
    writer.writerows(failures.items())
    return buf.getvalue()


# ---------------------------------------------------------------------------------- commands


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


def _targets(reg: Registry, dataset: str) -> list[Target]:
    root = reg.dataset(dataset).image_root()
    return [Target(i, root, s.id) for i, s in enumerate(reg.samples(dataset))]


def _check_crops(crops: int, batch_size: int, min_labels: int | None = None) -> None:
    if crops < 1:
        raise UsageError(f"--crops {crops} is invalid; use 1 or more")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} is invalid; use 1 or more")
    if min_labels is not None and not 0 <= min_labels <= NUM_CLASSES:
        raise UsageError(f"--min-labels {min_labels} is invalid; use 0..{NUM_CLASSES}")


def _resolve_crop(
    crop_size: int | None, spec: ckpt_mod.ModelSpec, targets: Sequence[Target], dataset: str
) -> int:
    """The crop size (``--crop-size``, else the run's training crop), checked against the size
    of the first image that can be read; unreadable images are left to the per-image failure
    path, so one bad first file doesn't cost the partial submission."""
    from hpatool.data.samples import Item, image_size

    crop = crop_size if crop_size is not None else spec.crop
    what = f"--crop-size {crop}" if crop_size is not None else f"the run's training crop {crop}"
    if crop < 8:
        raise UsageError(f"{what} is too small; use --crop-size 8 or more")
    first_error: str | None = None
    for t in targets:
        try:
            h, w = image_size(Item(dataset, t.root, t.id, ()))
        except DataError as exc:
            first_error = first_error or str(exc)
            continue
        if crop > min(h, w):
            raise UsageError(
                f"{what} is larger than the {w}x{h} images of dataset {dataset!r} (sample "
                f"{t.id!r}); use --crop-size {min(h, w)} or less (equal to the image size means "
                "the whole image)"
            )
        return crop
    raise DataError(
        f"none of the {len(targets)} images of dataset {dataset!r} can be read "
        f"(first: {first_error}); run 'hpatool datasets verify {dataset}'"
    )


@dataclass
class _Scored:
    scores: Scores
    crop: int
    thresholds: np.ndarray
    source: ModelSource
    is_main: bool


def _score_dataset(
    reg: Registry,
    targets: list[Target],
    *,
    dataset: str,
    run: str | None,
    checkpoint: Path | None,
    crops: int,
    crop_size: int | None,
    agg: str,
    threshold: str | float,
    batch_size: int,
    workers: int,
    device: str,
    seed: int,
    strict: bool,
    progress: ProgressFn | None,
) -> _Scored:
    """Load the model, score ``targets`` (sharded under torchrun), gather on rank 0."""
    from hpatool.engine.distributed import DistContext, resolve_device

    if agg not in AGGREGATIONS:
        raise UsageError(f"--agg {agg!r} is invalid; use max or mean")
    if not targets:
        raise UsageError("no samples to score")
    source = resolve_source(reg, run, checkpoint)
    ctx = DistContext.from_env()
    dev = resolve_device(device, ctx)
    ctx.init(dev)
    try:
        ckpt = ckpt_mod.load_checkpoint(source.checkpoint)
        thresholds = resolve_thresholds(threshold, source, ckpt)
        model, spec = ckpt_mod.build_model_from_checkpoint(ckpt, device=dev)
        import torch

        # channels_last is faster on CUDA and, through oneDNN, on the CPU too (resnet50 at 256:
        # 7.6-7.9 vs 6.4-6.6 crops/s on the 2-core development machine).
        model = model.to(memory_format=torch.channels_last)
        crop = _resolve_crop(crop_size, spec, targets, dataset)
        local = score(
            model,
            targets,
            crop=crop,
            crops=crops,
            agg=agg,
            mean=spec.mean,
            std=spec.std,
            batch_size=batch_size,
            workers=workers,
            device=dev,
            seed=seed,
            strict=strict,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=progress if ctx.is_main else None,
        )
        merged = Scores()
        for part in ctx.gather(local):
            merged.probs.update(part.probs)
            merged.failures.update(part.failures)
        return _Scored(merged, crop, thresholds, source, ctx.is_main)
    finally:
        ctx.destroy()


def predict(
    reg: Registry,
    *,
    dataset: str,
    run: str | None = None,
    checkpoint: Path | None = None,
    crops: int = 8,
    crop_size: int | None = None,
    agg: str = "max",
    threshold: str | float = "auto",
    min_labels: int = 1,
    out: Path = Path("submission.csv"),
    probs_out: Path | None = None,
    batch_size: int = 16,
    workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    strict: bool = False,
    progress: ProgressFn | None = None,
) -> PredictResult:
    """Score every sample of ``dataset`` and write a Kaggle submission (and probabilities).

    If some images cannot be read, the others are written to ``<out stem>.partial.csv`` (and
    ``<probs stem>.partial.csv``), ``out`` itself is not written, and ``WorkFailed`` is raised
    after the files are down; with ``strict`` the first bad image stops everything.
    """
    _check_crops(crops, batch_size, min_labels)
    out = check_output_file(out, "--out")
    if probs_out is not None:
        probs_out = check_output_file(probs_out, "--probs")
        if probs_out.resolve() == out.resolve():
            raise UsageError(f"--probs {probs_out} is the --out file; give it another name")
    targets = _targets(reg, dataset)
    scored = _score_dataset(
        reg,
        targets,
        dataset=dataset,
        run=run,
        checkpoint=checkpoint,
        crops=crops,
        crop_size=crop_size,
        agg=agg,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device,
        seed=seed,
        strict=strict,
        progress=progress,
    )
    result = PredictResult(
        dataset=dataset,
        checkpoint=scored.source.checkpoint,
        samples=len(targets),
        scored=len(scored.scores.probs),
        failures={},
        submission=None,
        probs=None,
        partial=None,
        crop=scored.crop,
        crops=crops,
        agg=agg,
        label_counts={},
        is_main=scored.is_main,
    )
    if not scored.is_main:
        return result
    ok = [t for t in targets if t.index in scored.scores.probs]
    ids = [t.id for t in ok]
    probs = [scored.scores.probs[t.index] for t in ok]
    labels = [decide_labels(p, scored.thresholds, min_labels) for p in probs]
    counts: dict[int, int] = {}
    for lab in labels:
        for c in lab:
            counts[c] = counts.get(c, 0) + 1
    result.label_counts = dict(sorted(counts.items()))
    result.failures = {targets[i].id: err for i, err in sorted(scored.scores.failures.items())}
    incomplete = bool(result.failures)
    sub_path = partial_path(out) if incomplete else out
    write_text_atomic(sub_path, submission_text(ids, labels))
    if probs_out is not None:
        probs_path = partial_path(probs_out) if incomplete else probs_out
        write_text_atomic(probs_path, probs_text(ids, probs))
        result.probs = probs_path
    failures_path = failures_path_for(out)
    if incomplete:
        result.partial = sub_path
        write_text_atomic(failures_path, failures_text(result.failures))
        shown = list(result.failures.items())[:3]
        listed = "; ".join(f"{i}: {e}" for i, e in shown)
        more = f"; and {len(result.failures) - len(shown)} more" if len(result.failures) > 3 else ""
        raise WorkFailed(
            f"{len(result.failures)} of {len(targets)} images could not be scored ({listed}{more}; "
            f"all listed in {failures_path}); the other {len(ids)} are in {sub_path}, and {out} "
            "was not written"
        )
    # A complete run: leftovers of an earlier incomplete one would only mislead.
    for stale in (partial_path(out), failures_path) + (
        (partial_path(probs_out),) if probs_out is not None else ()
    ):
        stale.unlink(missing_ok=True)
    result.submission = sub_path
    return result


@dataclass
class ClassReport:
    index: int
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvaluateResult:
    dataset: str
    fold: int | None
    samples: int
    crop: int
    crops: int
    agg: str
    threshold: str
    macro_f1: float
    macro_f1_at_05: float
    classes: list[ClassReport]
    checkpoint: Path
    is_main: bool = True
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    probs: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fold": self.fold,
            "samples": self.samples,
            "checkpoint": str(self.checkpoint),
            "crop": self.crop,
            "crops": self.crops,
            "agg": self.agg,
            "threshold": self.threshold,
            "macro_f1": self.macro_f1,
            "macro_f1_at_0.5": self.macro_f1_at_05,
            "classes": [c.__dict__ for c in self.classes],
        }


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray) -> list[ClassReport]:
    """Precision, recall, F1 (0 where undefined, as scikit-learn's ``zero_division=0``) and
    support per class."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = (t & p).sum(axis=0)
    fp = (~t & p).sum(axis=0)
    fn = (t & ~p).sum(axis=0)
    out = []
    for c in range(t.shape[1]):
        prec = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
        rec = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
        f1 = 2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else 0.0
        out.append(
            ClassReport(c, CLASS_NAMES[c], float(prec), float(rec), float(f1), int(t[:, c].sum()))
        )
    return out


def evaluate_run(
    reg: Registry,
    *,
    dataset: str,
    run: str | None = None,
    checkpoint: Path | None = None,
    fold: int | None = None,
    crops: int = 8,
    crop_size: int | None = None,
    agg: str = "max",
    threshold: str | float = "auto",
    min_labels: int = 1,
    batch_size: int = 16,
    workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> EvaluateResult:
    """Per-class precision, recall, F1 and support and macro F1 on the labelled samples of
    ``dataset`` (only fold ``fold`` if given; for the run's own validation dataset the run's
    fold is the default)."""
    _check_crops(crops, batch_size, min_labels)
    record = reg.dataset(dataset)
    if fold is None:
        fold = _validation_fold(reg, dataset, run, checkpoint)
    samples = reg.samples(dataset)
    if fold is not None:
        info = reg.split_info(dataset)
        if info is None:
            raise UsageError(
                f"dataset {dataset!r} has no folds; run 'hpatool split {dataset}' "
                "or leave out --fold"
            )
        if not 0 <= fold < int(info["folds"]):
            raise NotFound(
                f"fold {fold} does not exist: dataset {dataset!r} has "
                f"{info['folds']} folds (0 to {int(info['folds']) - 1})"
            )
        folds = reg.folds(dataset)
        keep = {s.id for s in samples if folds.get(s.id) == fold}
    else:
        keep = {s.id for s in samples}
    labelled = [(i, s) for i, s in enumerate(samples) if s.id in keep and s.target is not None]
    if not labelled:
        raise UsageError(
            f"dataset {dataset!r} has no labelled samples"
            + (f" in fold {fold}" if fold is not None else "")
            + "; evaluate needs a dataset with a Target column"
        )
    root = record.image_root()
    targets = [Target(i, root, s.id) for i, s in labelled]
    scored = _score_dataset(
        reg,
        targets,
        dataset=dataset,
        run=run,
        checkpoint=checkpoint,
        crops=crops,
        crop_size=crop_size,
        agg=agg,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device,
        seed=seed,
        strict=True,
        progress=progress,
    )
    from hpatool.labels import to_multihot

    y_true = to_multihot([s.target for _, s in labelled])
    probs = np.stack([scored.scores.probs[t.index] for t in targets])
    y_pred = np.stack(
        [
            np.isin(np.arange(NUM_CLASSES), decide_labels(p, scored.thresholds, min_labels))
            for p in probs
        ]
    )
    classes = per_class_report(y_true, y_pred)
    at_05 = per_class_report(y_true, probs >= DEFAULT_THRESHOLD)
    return EvaluateResult(
        dataset=dataset,
        fold=fold,
        samples=len(targets),
        crop=scored.crop,
        crops=crops,
        agg=agg,
        threshold=str(threshold),
        macro_f1=float(np.mean([c.f1 for c in classes])),
        macro_f1_at_05=float(np.mean([c.f1 for c in at_05])),
        classes=classes,
        checkpoint=scored.source.checkpoint,
        is_main=scored.is_main,
        y_true=y_true,
        y_pred=y_pred,
        probs=probs,
    )


def _validation_fold(
    reg: Registry, dataset: str, run: str | None, checkpoint: Path | None
) -> int | None:
    """The fold the model was validated on, when ``dataset`` is its first training dataset:
    from the registry for ``--run``, from the ``config.json`` beside a ``--checkpoint``."""
    datasets: list[str] = []
    fold: Any = None
    if run is not None:
        r = reg.run(run)
        datasets, fold = list(r.datasets), r.fold
    elif checkpoint is not None:
        try:
            config_text = (checkpoint.parent / ckpt_mod.CONFIG_FILE).read_text("utf-8")
            options = json.loads(config_text)["options"]
            datasets, fold = list(options["datasets"]), options["fold"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a checkpoint on its own: evaluate every labelled sample
    if datasets and datasets[0] == dataset and isinstance(fold, int):
        return fold
    return None


def plot_f1(results: Sequence[EvaluateResult], path: Path) -> Path:
    """Per-class F1 bars, one colour per result (see ``hpatool.plots``)."""
    from hpatool.plots import plot_f1 as draw

    first = results[0]
    where = f" fold {first.fold}" if first.fold is not None else ""
    series = [
        (f"{r.agg} of {r.crops} crops: macro F1 {r.macro_f1:.3f}", [c.f1 for c in r.classes])
        for r in results
    ]
    return draw(series, f"Per-class F1 on {first.dataset}{where}", path)
