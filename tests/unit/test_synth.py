"""hpatool.synth: files, determinism, label statistics and a learnable class signal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hpatool.errors import AlreadyExists, UsageError
from hpatool.ids import COLOURS, KAGGLE_ID, channel_path
from hpatool.labels import CLASS_NAMES, NUM_CLASSES, load_label_csv
from hpatool.synth import (
    TRAIN_CLASS_COUNTS,
    TRAIN_LABELS_PER_SAMPLE,
    TRAIN_SAMPLES,
    SynthResult,
    _class_weights,
    _inclusion,
    generate_sample,
    sample_targets,
    synth_dataset,
)

REAL_SHARE = np.asarray(TRAIN_CLASS_COUNTS) / TRAIN_SAMPLES


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


# --------------------------------------------------------------------------- the dataset


def test_writes_four_8bit_pngs_per_sample_and_labels_csv(tmp_path: Path) -> None:
    out = tmp_path / "new" / "synth"  # created, parents too
    calls: list[tuple[int, int]] = []
    result = synth_dataset(
        out, samples=5, size=64, seed=3, progress=lambda d, t: calls.append((d, t))
    )

    assert isinstance(result, SynthResult)
    assert result.out_dir == out
    assert result.labels_csv == out / "labels.csv"
    assert calls == [(i, 5) for i in range(1, 6)]
    assert len(result.ids) == len(set(result.ids)) == 5
    assert all(KAGGLE_ID.match(i) for i in result.ids)
    for sample_id in result.ids:
        for colour in COLOURS:
            with Image.open(channel_path(out, sample_id, colour)) as img:
                assert img.format == "PNG"
                assert img.mode == "L"
                assert img.size == (64, 64)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["labels.csv", *(f"{i}_{c}.png" for i in result.ids for c in COLOURS)]
    )  # no temporary files left behind

    text = result.labels_csv.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "Id,Target"
    table = load_label_csv(result.labels_csv)
    assert table.ids == result.ids
    assert table.targets == result.targets
    for target in result.targets:
        assert 1 <= len(target) <= 5
        assert list(target) == sorted(set(target))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = synth_dataset(tmp_path / "a", samples=3, size=48, seed=7)
    b = synth_dataset(tmp_path / "b", samples=3, size=48, seed=7)
    c = synth_dataset(tmp_path / "c", samples=3, size=48, seed=8)
    assert a.ids == b.ids and a.targets == b.targets
    assert _all_bytes(a.out_dir) == _all_bytes(b.out_dir)
    assert set(a.ids).isdisjoint(c.ids)
    green_a = (a.out_dir / f"{a.ids[0]}_green.png").read_bytes()
    green_c = (c.out_dir / f"{c.ids[0]}_green.png").read_bytes()
    assert green_a != green_c


def test_workers_give_the_same_files_as_one_process(tmp_path: Path) -> None:
    calls: list[int] = []
    one = synth_dataset(tmp_path / "one", samples=5, size=40, seed=11)
    two = synth_dataset(
        tmp_path / "two",
        samples=5,
        size=40,
        seed=11,
        workers=2,
        progress=lambda done, total: calls.append(done),
    )
    assert calls == [1, 2, 3, 4, 5]
    assert _all_bytes(one.out_dir) == _all_bytes(two.out_dir)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"samples": 0}, "--samples"),
        ({"samples": -3}, "--samples"),
        ({"size": 31}, "--size"),
        ({"size": 0}, "--size"),
        ({"workers": 0}, "--workers"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        synth_dataset(tmp_path / "out", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_that_already_holds_a_dataset(tmp_path: Path) -> None:
    first = synth_dataset(tmp_path / "d", samples=1, size=32, seed=0)
    before = _all_bytes(first.out_dir)
    with pytest.raises(AlreadyExists, match="choose an empty folder"):
        synth_dataset(tmp_path / "d", samples=2, size=32, seed=1)
    assert _all_bytes(first.out_dir) == before  # nothing overwritten
    assert issubclass(AlreadyExists, UsageError)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        synth_dataset(a_file, samples=1, size=32)


# --------------------------------------------------------------------------- single samples


@pytest.mark.parametrize("size", [32, 97, 256])
def test_generate_sample_shape_range_and_darkness(size: int) -> None:
    sample = generate_sample([0, 25, 14], size, np.random.default_rng(size))
    assert sample.shape == (4, size, size)
    assert sample.dtype == np.uint8
    for channel in sample:
        assert channel.max() >= 100  # bright structures use the upper range...
        assert np.percentile(channel, 5) < 20  # ...on a dark background between the cells
    assert np.median(sample[2]) < 40  # nuclei cover a small part of the field


def test_generate_sample_is_deterministic_and_checks_labels() -> None:
    a = generate_sample([2, 7], 64, np.random.default_rng(5))
    b = generate_sample([2, 7], 64, np.random.default_rng(5))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="out of range"):
        generate_sample([28], 64, np.random.default_rng(0))


def test_every_crop_shows_cells() -> None:
    """The trainer takes random crops: a quarter-size crop anywhere must contain cells."""
    size, crop = 512, 128
    sample = generate_sample([25], size, np.random.default_rng(1))
    for y in range(0, size - crop + 1, crop // 2):
        for x in range(0, size - crop + 1, crop // 2):
            window = sample[:, y : y + crop, x : x + crop]
            assert (window[3] > 30).mean() > 0.05, (y, x)  # ER stain of some cell
            assert (window[1] > 60).mean() > 0.05, (y, x)  # the cytosol label


# --------------------------------------------------------------------------- label statistics


def test_calibrated_weights_reproduce_the_real_class_shares() -> None:
    k = np.asarray(TRAIN_LABELS_PER_SAMPLE, dtype=np.float64)
    achieved = _inclusion(_class_weights(), k / k.sum())
    assert np.allclose(achieved, REAL_SHARE, rtol=1e-3, atol=1e-5)
    # Naive weights (the counts themselves) would give Nucleoplasm far too rarely.
    naive = _inclusion(REAL_SHARE / REAL_SHARE.sum(), k / k.sum())
    assert naive[0] < REAL_SHARE[0] - 0.03


def test_sample_targets_are_as_skewed_as_train_csv() -> None:
    targets = sample_targets(5000, np.random.default_rng(0))
    assert len(targets) == 5000
    counts = Counter(c for t in targets for c in t)
    share = np.array([counts[c] / 5000 for c in range(NUM_CLASSES)])
    assert CLASS_NAMES[0] == "Nucleoplasm" and CLASS_NAMES[25] == "Cytosol"
    assert share[0] == pytest.approx(0.415, abs=0.04)
    assert share[25] == pytest.approx(0.265, abs=0.03)
    assert np.max(np.abs(share - REAL_SHARE)) < 0.03
    assert all(share[c] < 0.01 for c in (8, 9, 10, 15, 27))  # the rare classes stay rare
    assert share[27] < share[0] / 100
    assert list(np.argsort(-share)[:2]) == [0, 25]  # Nucleoplasm, then Cytosol
    assert share[[21, 2]].min() > share[[8, 9, 10, 15, 16, 17, 20, 24, 26, 27]].max()

    per_sample = Counter(len(t) for t in targets)
    assert set(per_sample) <= {1, 2, 3, 4, 5}
    mean = sum(len(t) for t in targets) / 5000
    assert mean == pytest.approx(1.634, abs=0.05)
    assert per_sample[1] / 5000 == pytest.approx(15126 / 31072, abs=0.03)
    assert all(len(set(t)) == len(t) and list(t) == sorted(t) for t in targets)
    assert sample_targets(0, np.random.default_rng(0)) == []


# --------------------------------------------------------------------------- class signal


def _box_mean(image: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 box around each pixel (edges replicated)."""
    k = 2 * r + 1
    padded = np.pad(image.astype(np.float64), r + 1, mode="edge")
    c = padded.cumsum(0).cumsum(1)
    total = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return total[: image.shape[0], : image.shape[1]] / (k * k)


def _features(sample: np.ndarray) -> np.ndarray:
    """Simple green statistics relative to the blue nuclei: mean green (relative to the whole)
    inside nuclei, on the nuclear rim, near and far from nuclei; fine texture; bright fraction;
    overall brightness."""
    green = sample[1].astype(np.float64)
    nucleus = sample[2] > 40
    r = max(1, round(sample.shape[1] / 512 * 6))
    inner = _box_mean(nucleus, r) > 0.999
    grown = _box_mean(nucleus, r) > 0
    far = ~(_box_mean(nucleus, 4 * r) > 0)
    regions = [inner, grown & ~inner, ~grown & ~far, far]
    mean = green.mean() + 1e-6
    feats = [green[m].mean() / mean if m.any() else 0.0 for m in regions]
    feats.append(np.abs(green - _box_mean(green, 1)).mean() / mean)
    feats.append(float((green > green.mean() + 2 * green.std()).mean()))
    feats.append(float(np.log(mean)))
    return np.array(feats)


def _single_label_features(classes: list[int], per_class: int, size: int) -> np.ndarray:
    rows = []
    for c in classes:
        samples = [
            generate_sample([c], size, np.random.default_rng([c, k])) for k in range(per_class)
        ]
        rows.append([_features(s) for s in samples])
    return np.array(rows)


def test_pairs_of_classes_differ_in_simple_statistics() -> None:
    f = _single_label_features([0, 1, 8, 21, 25], per_class=3, size=128)
    nucleoplasm, membrane, peroxisomes, plasma, cytosol = (f[i] for i in range(5))
    inside, rim, near, texture = 0, 1, 2, 4
    # Nucleoplasm sits inside the nuclei, Cytosol around them.
    assert nucleoplasm[:, inside].min() > 2 * cytosol[:, inside].max()
    assert cytosol[:, near].min() > 2 * nucleoplasm[:, near].max()
    # Nuclear membrane: brighter on the rim than inside, unlike Nucleoplasm.
    assert (membrane[:, rim] / membrane[:, inside]).min() > (
        nucleoplasm[:, rim] / nucleoplasm[:, inside]
    ).max()
    # Peroxisomes: the same place as Cytosol, but punctate.
    assert peroxisomes[:, texture].min() > 2 * cytosol[:, texture].max()
    # Plasma membrane: away from the nuclei, and a thin line (much dimmer on average).
    assert plasma[:, inside].max() < 0.5
    assert plasma[:, -1].max() < cytosol[:, -1].min()


def test_nearest_centroid_separates_all_28_classes_on_held_out_samples() -> None:
    """Seven hand-made statistics and a nearest-centroid rule tell the 28 green patterns apart
    on unseen samples far above chance (1/28): the signal is distinct and position-free."""
    train_n, test_n = 4, 3
    f = _single_label_features(list(range(NUM_CLASSES)), train_n + test_n, size=128)
    train, test = f[:, :train_n], f[:, train_n:]
    mu = train.reshape(-1, f.shape[-1]).mean(0)
    sd = train.reshape(-1, f.shape[-1]).std(0) + 1e-9
    centroids = ((train - mu) / sd).mean(axis=1)  # (28, features)
    z = (test - mu) / sd  # (28, test_n, features)
    dist = ((z[:, :, None, :] - centroids[None, None]) ** 2).sum(-1)
    predicted = dist.argmin(-1)
    truth = np.arange(NUM_CLASSES)[:, None]
    accuracy = float((predicted == truth).mean())
    assert accuracy > 0.75, accuracy
