"""Multilabel-stratified folds: on the real train.csv, in the registry, and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpatool.data.split import fold_class_counts, make_folds, make_grouped_folds, split_dataset
from hpatool.errors import AlreadyExists, UsageError
from hpatool.labels import CLASS_NAMES, load_label_csv, to_multihot
from hpatool.registry import Registry
from tests.support import Invoke

RODS_AND_RINGS = CLASS_NAMES.index("Rods & rings")


@pytest.fixture(scope="module")
def real_targets(train_csv: Path) -> np.ndarray:
    if not train_csv.exists():
        pytest.skip(f"{train_csv} is not there")
    return to_multihot(load_label_csv(train_csv).targets)


@pytest.fixture(scope="module")
def real_folds(real_targets: np.ndarray) -> np.ndarray:
    return make_folds(real_targets, folds=5, seed=0)


def test_real_train_csv_rods_and_rings_in_every_fold(
    real_targets: np.ndarray, real_folds: np.ndarray
) -> None:
    assert real_targets[:, RODS_AND_RINGS].sum() == 11
    counts = fold_class_counts(real_targets, real_folds, 5)
    per_fold = [c[RODS_AND_RINGS] for c in counts]
    assert sum(per_fold) == 11
    assert all(2 <= n <= 3 for n in per_fold), per_fold


def test_real_train_csv_every_class_with_enough_samples_in_every_fold(
    real_targets: np.ndarray, real_folds: np.ndarray
) -> None:
    counts = np.array(fold_class_counts(real_targets, real_folds, 5))
    totals = real_targets.sum(axis=0)
    for c in range(len(CLASS_NAMES)):
        if totals[c] >= 5:
            assert (counts[:, c] > 0).all(), (CLASS_NAMES[c], counts[:, c])
            # stratified: every fold within one sample (plus rounding) of its fifth
            assert np.abs(counts[:, c] - totals[c] / 5).max() <= max(2, 0.03 * totals[c])
    sizes = np.bincount(real_folds, minlength=5)
    assert sizes.sum() == len(real_targets)
    assert sizes.max() - sizes.min() <= 0.03 * len(real_targets)


def test_folds_are_deterministic_and_depend_on_seed(real_targets: np.ndarray) -> None:
    y = real_targets[:3000]
    a = make_folds(y, 5, seed=0)
    assert np.array_equal(a, make_folds(y, 5, seed=0))
    assert not np.array_equal(a, make_folds(y, 5, seed=1))


def _toy_registry(home: Path, n: int = 60, labelled: bool = True) -> Registry:
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(n)]
    targets: list[tuple[int, ...] | None] = []
    for _ in range(n):
        k = int(rng.integers(1, 3))
        targets.append(tuple(sorted({int(v) for v in rng.choice([0, 2, 5, 25, 27], k)})))
    if not labelled:
        targets = [None] * n
    reg = Registry.open(home)
    reg.create_dataset("toy", "train" if labelled else "test", ids, targets, root=home)
    return reg


def test_split_dataset_stores_folds_in_registry(home: Path) -> None:
    with _toy_registry(home) as reg:
        result = split_dataset(reg, "toy", folds=3, seed=4)
        assert (result.folds, result.seed, result.samples) == (3, 4, 60)
        assert sum(result.fold_sizes) == 60
        assert result.uneven == []  # every class with >= 3 samples is in every fold
        info = reg.split_info("toy")
        assert info is not None and (info["folds"], info["seed"]) == (3, 4)
        folds = reg.folds("toy")
        assert len(folds) == 60 and set(folds.values()) == {0, 1, 2}
        assert reg.fold_class_counts("toy") == result.class_counts
        # same parameters again: fine, same folds
        again = split_dataset(reg, "toy", folds=3, seed=4)
        assert again.class_counts == result.class_counts and reg.folds("toy") == folds
        with pytest.raises(AlreadyExists, match="--force"):
            split_dataset(reg, "toy", folds=5, seed=4)
        replaced = split_dataset(reg, "toy", folds=5, seed=4, force=True)
        assert replaced.replaced and set(reg.folds("toy").values()) == set(range(5))


def test_split_rejects_unlabelled_and_tiny_datasets(home: Path) -> None:
    with _toy_registry(home, labelled=False) as reg, pytest.raises(UsageError, match="unlabelled"):
        split_dataset(reg, "toy")
    with Registry.open(home) as reg:
        reg.create_dataset("tiny", "train", ["a", "b"], [(0,), (1,)])
        with pytest.raises(UsageError, match="fewer than --folds 5"):
            split_dataset(reg, "tiny")
        with pytest.raises(UsageError, match="--folds 1"):
            split_dataset(reg, "tiny", folds=1)


def test_split_cli_and_datasets_show(cli: Invoke, home: Path) -> None:
    _toy_registry(home).close()
    result = cli("split", "toy", "--folds", "4", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "Split toy into 4 folds (seed 1)" in result.stdout
    shown = cli("datasets", "show", "toy", "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["folds"]["n"] == 4 and doc["folds"]["seed"] == 1
    counts = doc["folds"]["class_counts"]
    assert len(counts) == 4 and all(len(c) == 28 for c in counts)
    assert sum(doc["folds"]["sizes"]) == 60
    table = cli("datasets", "show", "toy")
    assert "Class counts per fold" in table.stdout and "27 Rods & rings" in table.stdout
    again = cli("split", "toy", "--folds", "5")
    assert again.exit_code == 2 and "--force" in again.stderr
    missing = cli("split", "nope")
    assert missing.exit_code == 2 and "unknown dataset 'nope'" in missing.stderr


def test_grouped_folds_keep_each_group_in_one_fold_and_change_nothing_without_groups() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 28)) < 0.1).astype(np.int64)
    y[:, 0] = 1
    singletons = np.arange(200)
    assert (make_grouped_folds(y, singletons, 5, 3) == make_folds(y, 5, 3)).all()
    group = np.arange(200)
    group[[10, 50, 90, 130, 170]] = 10  # a planted duplicate cluster of five
    group[[1, 2]] = 1
    _, dense = np.unique(group, return_inverse=True)
    folds = make_grouped_folds(y, dense, 5, 3)
    assert len(set(folds[[10, 50, 90, 130, 170]])) == 1 and folds[1] == folds[2]
    assert set(folds) == set(range(5)) and min(np.bincount(folds)) >= 30
