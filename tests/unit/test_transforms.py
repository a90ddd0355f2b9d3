"""Crops, the 8 dihedral transforms, normalisation and the Dataset over PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.data.samples import HpaDataset, Item, check_crop
from hpatool.data.transforms import (
    HPA_MEAN,
    HPA_STD,
    augment,
    center_crop,
    dihedral,
    normalize,
    random_crop,
    to_tensor,
)
from hpatool.errors import DataError, UsageError
from hpatool.ids import COLOURS, channel_path
from hpatool.imaging import save_png


def _img(h: int = 6, w: int = 6) -> np.ndarray:
    return np.arange(4 * h * w, dtype=np.uint8).reshape(4, h, w)


def test_dihedral_gives_the_8_symmetries_of_the_square() -> None:
    img = _img()
    outs = [dihedral(img, k) for k in range(8)]
    assert np.array_equal(outs[0], img)
    assert len({o.tobytes() for o in outs}) == 8
    expected = set()
    for rot in range(4):
        r = np.rot90(img, rot, axes=(1, 2))
        expected.add(np.ascontiguousarray(r).tobytes())
        expected.add(np.ascontiguousarray(r[:, :, ::-1]).tobytes())
    assert {np.ascontiguousarray(o).tobytes() for o in outs} == expected
    # channels are never mixed: each channel is transformed on its own
    for k in range(8):
        assert np.array_equal(dihedral(img, k)[2], dihedral(img[2:3], k)[0])
    with pytest.raises(ValueError):
        dihedral(img, 8)


def test_random_crop_is_inside_and_seeded() -> None:
    img = _img(20, 20)
    for seed in range(20):
        crop = random_crop(img, 7, np.random.default_rng(seed))
        assert crop.shape == (4, 7, 7)
        # it is a window of the image: find its top-left corner
        top, left = int(crop[0, 0, 0]) // 20, int(crop[0, 0, 0]) % 20
        assert np.array_equal(crop, img[:, top : top + 7, left : left + 7])
    a = augment(img, 8, np.random.default_rng(3))
    assert np.array_equal(a, augment(img, 8, np.random.default_rng(3)))
    assert random_crop(img, 20, np.random.default_rng(0)) is img


def test_center_crop() -> None:
    img = _img(10, 10)
    assert np.array_equal(center_crop(img, 4), img[:, 3:7, 3:7])
    assert center_crop(img, 32).shape == (4, 10, 10)


def test_to_tensor_normalises_per_channel() -> None:
    img = np.full((4, 2, 2), 51, dtype=np.uint8)
    x = to_tensor(img)
    assert x.dtype == torch.float32 and x.shape == (4, 2, 2)
    for c in range(4):
        assert torch.allclose(x[c], torch.full((2, 2), (0.2 - HPA_MEAN[c]) / HPA_STD[c]))


def _write_sample(root: Path, sample_id: str, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for colour in COLOURS:
        save_png(
            rng.integers(0, 256, (size, size), dtype=np.uint8),
            channel_path(root, sample_id, colour),
        )


def test_dataset_reads_pngs_and_is_deterministic_per_key(tmp_path: Path) -> None:
    items = [Item("d", tmp_path, f"id{i}", t) for i, t in enumerate([(0,), (3, 27)])]
    for i, it in enumerate(items):
        _write_sample(tmp_path, it.id, 24, i)
    ds = HpaDataset(items, crop=16)
    x, y = ds[1]
    assert x.shape == (4, 16, 16) and x.dtype == torch.uint8  # normalised on the device
    assert y.tolist() == [1.0 if c in (3, 27) else 0.0 for c in range(28)]
    raw = ds.load(1)
    assert np.array_equal(x.numpy(), raw[:, 4:20, 4:20])  # validation: the centre crop
    # normalised on the device, the values are exactly to_tensor's (as before uint8 loaders)
    assert torch.equal(normalize(x[None])[0], to_tensor(raw[:, 4:20, 4:20]))
    a, _ = ds[(1, 12345)]
    b, _ = ds[(1, 12345)]
    c, _ = ds[(1, 54321)]
    assert a.shape == (4, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert check_crop(24, items) == {"d": (24, 24)}
    with pytest.raises(UsageError, match="--crop 25 is larger than the 24x24 images"):
        check_crop(25, items)
    with pytest.raises(DataError, match="missing channel file"):
        check_crop(8, [Item("e", tmp_path, "absent", (0,))])
