"""Multilabel-stratified folds (iterative stratification), stored in the registry.

``make_folds`` assigns each sample a fold ``0..folds-1`` with ``MultilabelStratifiedKFold`` from
the ``iterative-stratification`` package (Sechidis et al., 2011): rare classes are placed first,
so a class with at least ``folds`` samples lands in every fold (11 "Rods & rings" samples in 5
folds give 2 or 3 per fold). Same targets and seed, same folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpatool.errors import AlreadyExists, DataError, UsageError
from hpatool.labels import NUM_CLASSES, to_multihot
from hpatool.options import SplitConfig
from hpatool.registry import Registry

MIN_FOLDS = 2
MAX_FOLDS = 20


@dataclass(frozen=True)
class SplitResult:
    dataset: str
    folds: int
    seed: int
    samples: int
    fold_sizes: list[int]
    class_counts: list[list[int]]  # [fold][class]
    replaced: bool
    #: classes with at least ``folds`` samples that still miss a fold (empty in practice)
    uneven: list[int]
    #: samples not split because their images are not there: reason -> count
    left_out: dict[str, int] = field(default_factory=dict)
    #: duplicate clusters (``hpatool dedup``) of 2+ of the split samples, each kept in one fold
    clusters_kept: int = 0


def make_folds(
    targets: np.ndarray, folds: int = SplitConfig.folds, seed: int = SplitConfig.seed
) -> np.ndarray:
    """Fold index per sample for an ``(n, 28)`` multi-hot array, multilabel-stratified."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(targets)
    if y.ndim != 2 or y.shape[0] < folds:
        raise UsageError(f"cannot split {y.shape[0]} samples into {folds} folds; use fewer folds")
    kfold = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    assignment = np.full(y.shape[0], -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(kfold.split(np.zeros(y.shape[0]), y)):
        assignment[val_idx] = k
    assert (assignment >= 0).all()
    return assignment


def fold_class_counts(targets: np.ndarray, assignment: np.ndarray, folds: int) -> list[list[int]]:
    """Samples of each class in each fold: ``[fold][class]``."""
    y = np.asarray(targets, dtype=np.int64)
    return [y[assignment == k].sum(axis=0).astype(int).tolist() for k in range(folds)]


def _check_existing(
    reg: Registry, name: str, folds: int, seed: int, force: bool
) -> dict[str, Any] | None:
    """The dataset's stored split; ``AlreadyExists`` if it has other folds or seed and not
    ``force``."""
    existing = reg.split_info(name)
    same = existing is not None and (existing["folds"], existing["seed"]) == (folds, seed)
    if existing is not None and not same and not force:
        raise AlreadyExists(
            f"dataset {name!r} is already split into {existing['folds']} folds with seed "
            f"{existing['seed']}; pass --force to replace the split (runs keep their record)"
        )
    return existing


def split_dataset(
    reg: Registry,
    name: str,
    folds: int = SplitConfig.folds,
    seed: int = SplitConfig.seed,
    *,
    force: bool = False,
    all_samples: bool = False,
) -> SplitResult:
    """Split dataset ``name`` into ``folds`` stratified folds and store them in the registry.

    Only the samples whose images are there are split (``hpatool.availability``; a dataset of
    labels alone, with no image folder or none of its images yet, is split whole), so that the
    folds are balanced among the samples training will use; the others get no fold and are
    counted in ``left_out``. ``all_samples`` splits every registered sample (folds that stay
    the same while a download goes on).

    Splitting again with the same folds and seed is a no-op that reports the stored split;
    different parameters replace it only with ``force`` (runs validated on the old folds would
    otherwise silently change meaning).
    """
    if not MIN_FOLDS <= folds <= MAX_FOLDS:
        raise UsageError(f"--folds {folds} is out of range; use {MIN_FOLDS} to {MAX_FOLDS}")
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, not {seed}")
    record = reg.dataset(name)
    samples = reg.samples(name)
    unlabelled = sum(1 for s in samples if s.target is None)
    if unlabelled:
        raise UsageError(
            f"dataset {name!r} has {unlabelled:,} unlabelled samples (kind {record.kind}); only a "
            "dataset registered from a CSV with a Target column can be split"
        )
    chosen, left_out = samples, {}
    if not all_samples:
        from hpatool.availability import usable_samples

        # a dataset of labels alone (no image folder, or none of its images yet): all of it
        usable = usable_samples(reg, name, samples, labels_only=True)
        chosen, left_out = usable.samples, usable.left_out
    if len(chosen) < folds:
        there = f" with images ({usable.summary()})" if left_out else ""
        raise UsageError(
            f"dataset {name!r} has {len(chosen)} samples{there}, fewer than --folds {folds}; "
            "use fewer folds" + (", or --all-samples" if left_out else "")
        )
    _check_existing(reg, name, folds, seed, force)
    y = to_multihot([s.target for s in chosen])
    group = _duplicate_groups(reg, name, [s.id for s in chosen])
    assignment = make_grouped_folds(y, group, folds=folds, seed=seed)
    with reg.transaction():  # the command's unit of work: the split and its folds, together
        # Decide again inside the write lock: another split, or a 'datasets remove' and 'add',
        # may have landed while the folds were being computed.
        replaced = _check_existing(reg, name, folds, seed, force) is not None
        if [(s.id, s.target) for s in reg.samples(name)] != [(s.id, s.target) for s in samples]:
            raise DataError(
                f"dataset {name!r} changed in {reg.path} while it was being split (removed and "
                "added again, or given other samples); nothing was stored: run the split again"
            )
        reg.set_folds(name, [s.id for s in chosen], assignment.tolist(), folds=folds, seed=seed)
    counts = fold_class_counts(y, assignment, folds)
    sizes = np.bincount(assignment, minlength=folds).astype(int).tolist()
    totals = y.sum(axis=0)
    uneven = [
        c for c in range(NUM_CLASSES) if totals[c] >= folds and min(k[c] for k in counts) == 0
    ]
    return SplitResult(
        dataset=name,
        folds=folds,
        seed=seed,
        samples=len(chosen),
        fold_sizes=sizes,
        class_counts=counts,
        replaced=replaced,
        uneven=uneven,
        left_out=left_out,
        clusters_kept=int(np.sum(np.bincount(group) >= 2)) if len(group) else 0,
    )


def _duplicate_groups(reg: Registry, name: str, ids: list[str]) -> np.ndarray:
    """Group number of each of ``ids``: the members of one duplicate cluster (``hpatool
    dedup``, found across all datasets) share one; every other sample is a group of its own."""
    index = {sample_id: i for i, sample_id in enumerate(ids)}
    group = np.arange(len(ids), dtype=np.int64)
    for cluster in reg.clusters([name]):
        members = [index[sid] for ds, sid in cluster if ds == name and sid in index]
        if len(members) >= 2:
            group[members] = min(members)
    _, dense = np.unique(group, return_inverse=True)
    return dense.astype(np.int64)


def make_grouped_folds(
    targets: np.ndarray,
    group: np.ndarray,
    folds: int = SplitConfig.folds,
    seed: int = SplitConfig.seed,
) -> np.ndarray:
    """``make_folds`` over groups: the samples of one group (a duplicate cluster) share a fold.
    Each group is stratified as one row holding the union of its members' labels; without
    groups of two or more this is ``make_folds`` exactly."""
    y = np.asarray(targets)
    n_groups = int(group.max()) + 1 if len(group) else 0
    if n_groups == len(group):
        return make_folds(y, folds=folds, seed=seed)
    union = np.zeros((n_groups, y.shape[1]), dtype=y.dtype)
    np.maximum.at(union, group, y)
    return make_folds(union, folds=folds, seed=seed)[group]
