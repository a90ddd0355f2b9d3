"""Oversampling: multipliers, weights, the seeded weighted/distributed sampler, no val leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpatool.data.samples import targets_array, train_val_items
from hpatool.data.sampling import (
    WeightedEpochSampler,
    auto_multipliers,
    class_multipliers,
    expected_class_share,
    parse_oversample,
    sample_weights,
)
from hpatool.data.split import split_dataset
from hpatool.errors import UsageError
from hpatool.labels import CLASS_NAMES, load_label_csv, to_multihot
from hpatool.registry import Registry


def _idx(name: str) -> int:
    return CLASS_NAMES.index(name)


def test_auto_multipliers_on_real_train_csv(train_csv: Path) -> None:
    if not train_csv.exists():
        pytest.skip(f"{train_csv} is not there")
    y = to_multihot(load_label_csv(train_csv).targets)
    m = auto_multipliers(y)
    assert m.shape == (28,) and m.min() >= 1 and m.max() <= 7
    for rare in ("Rods & rings", "Lysosomes", "Endosomes", "Peroxisomes", "Microtubule ends"):
        assert m[_idx(rare)] >= 4, rare
    for common in ("Nucleoplasm", "Cytosol"):
        assert m[_idx(common)] == 1, common
    share = y.mean(axis=0)
    assert (m[share < 0.03] >= 2).all()  # every rare class is boosted
    assert m[_idx("Rods & rings")] == 7


def test_parse_oversample_specs() -> None:
    assert parse_oversample("auto") == "auto"
    assert parse_oversample(" NONE ") == "none"
    assert parse_oversample("27=7,10=5") == {27: 7.0, 10: 5.0}
    assert parse_oversample("Lysosomes=5, rods & rings=7") == {10: 5.0, 27: 7.0}
    y = np.zeros((4, 28), dtype=np.uint8)
    m = class_multipliers("27=7,3=2.5", y)
    assert m[27] == 7 and m[3] == 2.5 and m.sum() == 26 + 7 + 2.5
    assert (class_multipliers("none", y) == 1).all()


@pytest.mark.parametrize(
    ("spec", "token"),
    [
        ("27", "'27'"),
        ("28=2", "'28'"),
        ("Mitochondrion=2", "'Mitochondrion'"),
        ("3=abc", "'abc'"),
        ("3=-1", "'-1'"),
        ("3=2,3=4", "'3'"),
        ("", "empty"),
    ],
)
def test_parse_oversample_bad_specs_name_the_token(spec: str, token: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_oversample(spec)
    assert token in str(info.value)
    assert "\n" not in str(info.value)


def test_sample_weight_is_largest_multiplier_of_its_labels() -> None:
    y = to_multihot([(0,), (0, 27), (10, 25), ()])
    m = np.ones(28)
    m[27], m[10] = 7, 5
    assert sample_weights(y, m).tolist() == [1, 7, 5, 1]


def _random_targets(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.4, 0.004, 28)
    y = (rng.random((n, 28)) < prevalence).astype(np.uint8)
    y[y.sum(axis=1) == 0, 0] = 1
    return y


def test_sampler_empirical_class_frequencies_match_multipliers() -> None:
    y = _random_targets(3000)
    m = auto_multipliers(y)
    assert m.max() >= 5  # the test data has rare classes
    w = sample_weights(y, m)
    sampler = WeightedEpochSampler(w, seed=3)
    counts = np.zeros(28)
    draws = 0
    for epoch in range(30):
        sampler.set_epoch(epoch)
        idx = np.array([i for i, _ in sampler])
        counts += y[idx].sum(axis=0)
        draws += len(idx)
    empirical = counts / draws
    expected = expected_class_share(y, w)
    # 90k draws: within 4 standard errors (and boosted well above the plain frequency)
    se = np.sqrt(expected * (1 - expected) / draws)
    assert (np.abs(empirical - expected) <= 4 * se + 1e-4).all()
    rarest = int(np.argmin(y.sum(axis=0)))
    assert empirical[rarest] > 3 * y[:, rarest].mean()


def test_sampler_is_seeded_per_epoch_and_sliced_per_rank() -> None:
    w = sample_weights(_random_targets(101), np.linspace(1, 7, 28))
    s = WeightedEpochSampler(w, seed=5)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(0)
    assert list(s) == first
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in first]
    assert len({a for _, a in first}) == len(first)  # one augmentation seed per position
    ranks = [WeightedEpochSampler(w, seed=5, rank=r, world_size=3) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(2)
    slices = [list(sampler) for sampler in ranks]
    assert {len(sl) for sl in slices} == {34} and all(len(sm) == 34 for sm in ranks)
    full = ranks[0].draw(2)
    for rank, sl in enumerate(slices):
        assert [i for i, _ in sl] == full[rank::3].tolist()
    # a resume in the middle of an epoch continues the same sequence
    s.set_epoch(1, start=40)
    tail = list(s)
    s.set_epoch(1)
    assert tail == list(s)[40:] and len(s) == 101


def test_uniform_weights_give_a_permutation() -> None:
    s = WeightedEpochSampler(np.ones(50), seed=0)
    s.set_epoch(4)
    assert sorted(i for i, _ in s) == list(range(50))


def test_no_validation_id_in_any_training_draw(home: Path) -> None:
    rng = np.random.default_rng(1)
    ids = [f"k{i:03d}" for i in range(200)]
    targets = [tuple(sorted({int(v) for v in rng.choice(28, 2)})) for _ in ids]
    home.mkdir(parents=True, exist_ok=True)
    for sid in [*ids, *(f"x{i:03d}" for i in range(30))]:  # training uses samples with images
        for colour in ("red", "green", "blue", "yellow"):
            (home / f"{sid}_{colour}.png").touch()
    with Registry.open(home) as reg:
        reg.create_dataset("main", "train", ids, targets, root=home)
        # an external set that repeats 20 of main's ids (say, registered twice) plus new ones
        extra_ids = ids[:20] + [f"x{i:03d}" for i in range(30)]
        extra_targets = targets[:20] + [(27,)] * 30
        reg.create_dataset("extra", "external", extra_ids, extra_targets, root=home)
        split_dataset(reg, "main", folds=5, seed=0)
        for fold in range(5):
            parts = train_val_items(reg, ["main", "extra"], fold)
            val_ids = {it.id for it in parts.val}
            assert {it.id for it in parts.val} == {
                sid for sid, k in reg.folds("main").items() if k == fold
            }
            assert not val_ids & {it.id for it in parts.train}
            assert parts.removed_overlap == len(val_ids & set(ids[:20]))
            y = targets_array(parts.train)
            sampler = WeightedEpochSampler(sample_weights(y, auto_multipliers(y)), seed=fold)
            for epoch in range(3):
                sampler.set_epoch(epoch)
                drawn = {parts.train[i].id for i, _ in sampler}
                assert not drawn & val_ids
