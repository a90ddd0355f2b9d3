"""The torch Dataset over registry samples, and which samples train and which validate.

``train_val_items`` reads the registry: validation is fold ``K`` of the first dataset; training is
every other labelled sample of the first dataset plus all labelled samples of the other datasets,
minus any sample whose id is in the validation part (so a dataset registered twice cannot leak
validation images into training).

``HpaDataset`` reads a sample's four PNGs (or its decoded cache) and returns ``(x, y)``: a uint8
tensor ``(4, crop, crop)`` (normalised on the device by ``transforms.normalize``: a quarter of
float32's bytes through shared memory, pinning and the host-to-device copy) and a float
multi-hot ``(28,)``. Its keys are either a plain index (validation:
a centre crop) or ``(index, aug_seed)`` pairs as yielded by
``hpatool.data.sampling.WeightedEpochSampler`` (training: the random crop, dihedral transform
and ``--augment`` jitter come from ``numpy.random.default_rng(aug_seed)``, so they depend only
on the run seed, the epoch and the position in the epoch, never on worker processes or on a
resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hpatool.data.transforms import HPA_MEAN, HPA_STD, augment, center_crop
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.ids import channel_path
from hpatool.imaging import open_image, read_sample
from hpatool.labels import NUM_CLASSES, to_multihot
from hpatool.registry import Registry


class WorkersCapped(UserWarning):
    """``--workers`` asked for more DataLoader workers than there are CPUs to run them."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as torch's DataLoader counts them)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """The DataLoader workers to start for ``--workers requested``: at most one per usable CPU.

    More would only slow loading down (torch warns once per loader); a cut is reported once,
    as a ``WorkersCapped`` warning (the CLI shows it as one ``warning:`` line).
    """
    import warnings

    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    warnings.warn(
        f"--workers {requested} is more than the {cpus} CPUs this process can use; "
        f"using {cpus} DataLoader workers",
        WorkersCapped,
        stacklevel=2,
    )
    return cpus


@dataclass(frozen=True)
class Item:
    """One labelled sample: where its images are and its classes."""

    dataset: str
    root: Path
    id: str
    target: tuple[int, ...]
    cache: Path | None = None  # its decoded array (``hpatool.data.cache``), when one is used


@dataclass
class TrainValItems:
    train: list[Item]
    val: list[Item]
    split: dict[str, Any]  # {"folds": n, "seed": s, "created_at": t} of the first dataset
    skipped_unlabelled: int = 0
    removed_overlap: int = 0  # samples of later datasets whose id is in the validation fold
    removed_duplicates: int = 0  # samples of later datasets whose id is already in training
    per_dataset: dict[str, int] = field(default_factory=dict)  # training samples per dataset
    #: samples left out because their images are not there, per dataset: reason -> count
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)
    val_left_out: int = 0  # of them, samples of the validation fold
    unsplit: int = 0  # usable samples of the first dataset with no fold (added after the split)
    #: training samples left out as duplicates (``hpatool dedup``) of a validation sample
    duplicates_removed: list[tuple[str, str]] = field(default_factory=list)
    #: the run's datasets that ``hpatool dedup`` has not hashed
    not_deduplicated: list[str] = field(default_factory=list)

    def left_out_lines(self) -> list[str]:
        """One line per dataset with samples left out: how many and why."""
        lines = []
        for name, reasons in self.left_out.items():
            n = sum(reasons.values())
            why = ", ".join(f"{k:,} {r}" for r, k in sorted(reasons.items()))
            val = (
                f", {self.val_left_out:,} of them in the validation fold"
                if self.val_left_out and name == next(iter(self.per_dataset), None)
                else ""
            )
            lines.append(f"{n:,} samples of {name!r} left out: {why}{val}")
        return lines


def _labelled_items(
    reg: Registry, name: str, limit: int | None
) -> tuple[list[Item], int, list[Item], dict[str, int]]:
    """The labelled samples of ``name`` (its first ``limit``): ``(usable items, unlabelled count,
    unusable items, left-out counts by reason)``."""
    from hpatool.availability import usable_samples

    record = reg.dataset(name)
    root = record.image_root()
    samples = reg.samples(name)
    if limit is not None:
        samples = samples[:limit]
    labelled = [s for s in samples if s.target is not None]
    skipped = len(samples) - len(labelled)
    if not labelled:
        raise UsageError(
            f"dataset {name!r} has no labelled samples (kind {record.kind}); training needs a "
            "dataset registered from a CSV with a Target column"
        )
    usable = usable_samples(reg, name, labelled)
    kept = {s.id for s in usable.samples}
    items = [Item(name, root, s.id, s.target) for s in labelled if s.target is not None]
    good = [it for it in items if it.id in kept]
    if not good:
        raise DataError(
            f"none of the {len(labelled)} labelled samples of dataset {name!r} has its images "
            f"({usable.summary().split('(', 1)[-1].rstrip(')')}); download or convert them first, "
            f"or check its folder {root}"
        )
    return good, skipped, [it for it in items if it.id not in kept], usable.left_out


def dataset_items(reg: Registry, name: str, limit: int | None = None) -> list[Item]:
    """The usable labelled samples of one dataset in registration order (of its first
    ``limit`` samples)."""
    return _labelled_items(reg, name, limit)[0]


def train_val_items(
    reg: Registry,
    datasets: Sequence[str],
    fold: int,
    limit: int | None = None,
    *,
    strict: bool = False,
) -> TrainValItems:
    """Training and validation samples for ``--dataset``s ``datasets`` and ``--fold fold``.

    Samples whose images are not there (``hpatool.availability``) are left out and counted;
    with ``strict``, a validation sample left out is an error (the validation set would not be
    the fold the user asked for)."""
    if not datasets:
        raise UsageError("give at least one --dataset")
    dupes = sorted({d for d in datasets if list(datasets).count(d) > 1})
    if dupes:
        raise UsageError(f"--dataset {dupes[0]!r} is given twice; name each dataset once")
    first = datasets[0]
    reg.dataset(first)  # NotFound with the list of known datasets
    info = reg.split_info(first)
    if info is None:
        raise UsageError(
            f"dataset {first!r} has no folds; run 'hpatool split {first}' first (validation is "
            "a fold of the first --dataset)"
        )
    n_folds = int(info["folds"])
    if not 0 <= fold < n_folds:
        raise NotFound(
            f"fold {fold} does not exist: dataset {first!r} has {n_folds} folds "
            f"(0 to {n_folds - 1}); pass --fold 0..{n_folds - 1}"
        )
    for name in datasets[1:]:
        reg.dataset(name)
    folds = reg.folds(first)
    items, skipped, missing, reasons = _labelled_items(reg, first, limit)
    left_out = {first: reasons} if reasons else {}
    val_missing = [it for it in missing if folds.get(it.id) == fold]
    if val_missing and strict:
        raise DataError(
            f"{len(val_missing)} samples of validation fold {fold} of {first!r} have no images "
            f"(the first: {val_missing[0].id}); --strict refuses a partial validation fold: "
            "download or convert them, or leave out --strict to validate on the rest"
        )
    val = [it for it in items if folds.get(it.id) == fold]
    train = [it for it in items if folds.get(it.id) is not None and folds[it.id] != fold]
    unsplit = sum(1 for it in items if folds.get(it.id) is None)
    if not val:
        raise UsageError(
            f"fold {fold} of dataset {first!r} has no samples"
            + (f" among the first {limit} (--limit); raise --limit" if limit else "")
            + (f" with images ({len(val_missing)} without)" if val_missing else "")
        )
    per_dataset = {first: len(train)}
    val_ids = {it.id for it in val} | {it.id for it in val_missing}
    extra = _other_datasets(reg, datasets[1:], limit, val_ids, train)
    skipped += extra.skipped
    left_out.update(extra.left_out)
    per_dataset.update(extra.per_dataset)
    removed, duplicates = extra.removed, extra.duplicates
    dup_removed = _duplicates_of(reg, list(datasets), val, train)
    if dup_removed:
        train = [it for it in train if (it.dataset, it.id) not in dup_removed]
        for it in dup_removed:
            per_dataset[it[0]] -= 1
    if not train:
        raise UsageError("no training samples left after taking out the validation fold")
    return TrainValItems(
        train=train,
        val=val,
        split={"folds": n_folds, "seed": int(info["seed"]), "created_at": info.get("created_at")},
        skipped_unlabelled=skipped,
        removed_overlap=removed,
        removed_duplicates=duplicates,
        per_dataset=per_dataset,
        left_out=left_out,
        val_left_out=len(val_missing),
        unsplit=unsplit,
        duplicates_removed=sorted(dup_removed),
        not_deduplicated=[d for d in datasets if not reg.dedup_done(d)],
    )


@dataclass
class _Extra:
    """What the datasets after the first add to training (``_other_datasets``)."""

    skipped: int = 0  # unlabelled samples
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)
    per_dataset: dict[str, int] = field(default_factory=dict)
    removed: int = 0  # ids in the validation fold
    duplicates: int = 0  # ids already in training


def _other_datasets(
    reg: Registry, names: Sequence[str], limit: int | None, val_ids: set[str], train: list[Item]
) -> _Extra:
    """Add the labelled samples of the datasets after the first to ``train`` (in place),
    except ids in the validation fold and ids already in training (the same sample
    registered twice is trained once); what was added, left out and removed."""
    out = _Extra()
    train_ids = {it.id for it in train}
    for name in names:
        extra, skipped, _, reasons = _labelled_items(reg, name, limit)
        out.skipped += skipped
        if reasons:
            out.left_out[name] = reasons
        outside_val = [it for it in extra if it.id not in val_ids]
        out.removed += len(extra) - len(outside_val)
        kept = [it for it in outside_val if it.id not in train_ids]
        out.duplicates += len(outside_val) - len(kept)
        train_ids.update(it.id for it in kept)
        out.per_dataset[name] = len(kept)
        train.extend(kept)
    return out


def _duplicates_of(
    reg: Registry, datasets: list[str], val: list[Item], train: list[Item]
) -> set[tuple[str, str]]:
    """The training samples (``(dataset, id)``) in a duplicate cluster (``hpatool dedup``)
    with a validation sample: trained on, they would leak into validation."""
    clusters = reg.clusters(datasets)
    if not clusters:
        return set()
    val_keys = {(it.dataset, it.id) for it in val}
    tainted = {m for c in clusters if any(tuple(m) in val_keys for m in c) for m in map(tuple, c)}
    return {(it.dataset, it.id) for it in train if (it.dataset, it.id) in tainted}


def image_size(item: Item) -> tuple[int, int]:
    """``(height, width)`` of a sample, read from the header of its red channel file."""
    path = channel_path(item.root, item.id, "red")
    try:
        with open_image(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing channel file of dataset {item.dataset!r}; run 'hpatool datasets "
            f"verify {item.dataset}', or 'hpatool datasets set-root {item.dataset} DIR' if its "
            "images moved"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None
    return height, width


def check_crop(crop: int, items: Sequence[Item]) -> dict[str, tuple[int, int]]:
    """Check ``crop`` against the first sample of each dataset in ``items``; return the sizes.
    Datasets stored at different sizes (512 and 1024 px, say) are refused: one run never mixes
    scales (a cell would be twice as large in one dataset's crops as in the other's)."""
    if crop < 8:
        raise UsageError(f"--crop {crop} is too small; use at least 8 pixels")
    firsts: dict[str, Item] = {}
    for it in items:
        firsts.setdefault(it.dataset, it)
    sizes = {name: image_size(it) for name, it in firsts.items()}
    for name, (h, w) in sizes.items():
        if crop > min(h, w):
            raise UsageError(
                f"--crop {crop} is larger than the {w}x{h} images of dataset {name!r}; use "
                f"--crop {min(h, w)} or less"
            )
    (a, (ah, aw)), *others = sizes.items()
    other = next(((n, s) for n, s in others if s != (ah, aw)), None)
    if other is not None:
        b, (bh, bw) = other
        raise UsageError(
            f"dataset {a!r} stores {aw}x{ah} images and dataset {b!r} {bw}x{bh}: one run never "
            f"mixes scales; convert {b!r} to {aw} px ('hpatool preprocess DIR --size {aw} "
            f"--name NEW') and train on that, or train on the datasets of one size"
        )
    return sizes


def targets_array(items: Sequence[Item]) -> np.ndarray:
    """``(n, 28)`` uint8 multi-hot of the items' targets."""
    return to_multihot([it.target for it in items])


class HpaDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples as ``(x, y)``: ``x`` uint8 ``(4, crop, crop)`` (``transforms.normalize`` makes it
    the model's input on the device, with ``mean``/``std``), ``y`` float ``(28,)``.

    ``dataset[i]`` gives the centre crop (validation); ``dataset[(i, aug_seed)]`` gives a random
    crop and dihedral transform drawn from ``default_rng(aug_seed)`` (training).
    """

    def __init__(
        self,
        items: Sequence[Item],
        crop: int,
        mean: Sequence[float] = HPA_MEAN,
        std: Sequence[float] = HPA_STD,
        augment: str = "dihedral",
        sizes: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.items = list(items)
        self.crop = int(crop)
        self.augment = augment  # --augment: transforms.AUGMENTS
        #: the stored (height, width) of each dataset's images: a sample of another size is
        #: an error, never a silent change of scale (``None``: not checked)
        self.sizes = dict(sizes) if sizes is not None else None
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.targets = targets_array(self.items).astype(np.float32)
        assert self.targets.shape[1] == NUM_CLASSES

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> np.ndarray:
        """The raw ``(4, H, W)`` uint8 sample; a ``DataError`` if it is smaller than the crop."""
        item = self.items[index]
        if item.cache is not None:
            from hpatool.data.cache import read_cached

            img = read_cached(item.cache, item.id)  # a memory map: a crop reads its window
        else:
            img = read_sample(item.root, item.id)
        if min(img.shape[1:]) < self.crop:
            raise DataError(
                f"sample {item.id!r} of dataset {item.dataset!r} is {img.shape[2]}x{img.shape[1]},"
                f" smaller than the {self.crop} crop; use a smaller --crop or resize it "
                "('hpatool preprocess --size')"
            )
        if self.sizes is not None and item.dataset in self.sizes:
            h, w = self.sizes[item.dataset]
            if tuple(img.shape[1:]) != (h, w):
                raise DataError(
                    f"sample {item.id!r} of dataset {item.dataset!r} is {img.shape[2]}x"
                    f"{img.shape[1]}, not the {w}x{h} of the dataset's other images: a run "
                    "never mixes scales; convert it to one size ('hpatool preprocess --size')"
                )
        return img

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple):
            index, aug_seed = int(key[0]), int(key[1])
            rng = np.random.default_rng(aug_seed)
            img = augment(self.load(index), self.crop, rng, self.augment)
        else:
            index = int(key)
            img = center_crop(self.load(index), self.crop)
        if not (img.flags.writeable and img.flags.c_contiguous):
            img = np.array(img, order="C")  # a cached sample's read-only map: copied once
        return torch.from_numpy(img), torch.from_numpy(self.targets[index])
