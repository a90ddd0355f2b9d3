"""Crops, the 8 dihedral transforms and per-channel normalisation of ``(4, H, W)`` samples.

Pure numpy on uint8 ``(C, H, W)`` arrays (channel order R, G, B, Y). Loaders hand over uint8
tensors; ``normalize`` turns a batch into normalised floats where it is cheapest, on the device
(``to_tensor`` does the same for one array, with identical values). Training takes a random
``crop x crop`` window and one of the 8 symmetries of the square (rotations by 0/90/180/270
degrees, each with or without a horizontal flip): cells have no preferred orientation, so all 8
are equally valid images. Validation takes one centre crop (the whole image when the crop is at
least the image size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Per-channel mean and standard deviation (R, G, B, Y) of the Kaggle 2018 training images on a
#: 0..1 scale (approximate, as widely used for this competition). They are stored in every
#: checkpoint, so prediction always normalises exactly as training did.
HPA_MEAN: tuple[float, float, float, float] = (0.0804, 0.0526, 0.0548, 0.0827)
HPA_STD: tuple[float, float, float, float] = (0.1480, 0.1110, 0.1570, 0.1490)

NUM_DIHEDRAL = 8


def random_crop(img: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``crop x crop`` window (the whole image if it is not larger than ``crop``)."""
    _, h, w = img.shape
    if crop >= h and crop >= w:
        return img
    ch, cw = min(crop, h), min(crop, w)
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return img[:, top : top + ch, left : left + cw]


def center_crop(img: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop x crop`` window (the whole image if it is not larger than ``crop``)."""
    _, h, w = img.shape
    ch, cw = min(crop, h), min(crop, w)
    top = (h - ch) // 2
    left = (w - cw) // 2
    return img[:, top : top + ch, left : left + cw]


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0..7) of the dihedral group: rotate by ``(k % 4) * 90`` degrees
    counter-clockwise, then flip left-right if ``k >= 4``. ``k = 0`` is the identity."""
    if not 0 <= k < NUM_DIHEDRAL:
        raise ValueError(f"dihedral transform index must be 0..7, not {k}")
    out = np.rot90(img, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return out


def augment(img: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation: a random crop, then a random one of the 8 dihedral transforms."""
    out = random_crop(img, crop, rng)
    return dihedral(out, int(rng.integers(0, NUM_DIHEDRAL)))


def to_tensor(
    img: np.ndarray,
    mean: tuple[float, ...] = HPA_MEAN,
    std: tuple[float, ...] = HPA_STD,
) -> torch.Tensor:
    """uint8 ``(C, H, W)`` -> float32 tensor, scaled to 0..1 and normalised per channel."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img)).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] = HPA_MEAN,
    std: Sequence[float] = HPA_STD,
) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` -> float32 scaled to 0..1 and normalised per channel, on ``x``'s
    device (the GPU when there is one: images travel as uint8, a quarter of float32's bytes).
    The same operations in the same order as ``to_tensor``, so the values are identical. A
    float tensor is taken as already normalised and returned as it is."""
    import torch

    if x.is_floating_point():
        return x
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.to(torch.float32).div_(255.0).sub_(m).div_(s)
