"""Crops, the 8 dihedral transforms and per-channel normalisation of ``(4, H, W)`` samples.

Pure numpy on uint8 ``(C, H, W)`` arrays (channel order R, G, B, Y). Loaders hand over uint8
tensors; ``normalize`` turns a batch into normalised floats where it is cheapest, on the device
(``to_tensor`` does the same for one array, with identical values). Training takes a random
``crop x crop`` window and one of the 8 symmetries of the square (rotations by 0/90/180/270
degrees, each with or without a horizontal flip): cells have no preferred orientation, so all 8
are equally valid images. Validation takes one centre crop (the whole image when the crop is at
least the image size).

``--augment`` (``AUGMENTS``) adds to that: ``light`` jitters each channel's brightness, contrast
and gamma (the stains' intensities vary between images and microscopes); ``strong`` does that
too and rotates and scales the window slightly (OpenCV's ``warpAffine`` from the image around it,
reflected at the image's edges). ``dihedral`` is the crop and the 8 symmetries alone, drawing
exactly the numbers it always drew, so runs trained before ``--augment`` resume exactly. Every
draw comes from the sample's own ``numpy.random.Generator``: deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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

#: ``--augment``: the training augmentations, weakest first.
AUGMENTS = ("dihedral", "light", "strong")


@dataclass(frozen=True)
class Jitter:
    """How far ``--augment`` moves a sample: intensity (``contrast``: a factor in 1 +- it;
    ``brightness``: an offset in +- it on the 0..1 scale; ``gamma``: an exponent in
    exp(+- it)) and geometry (``degrees``: a rotation in +- it; ``scale``: a zoom in 1 +- it)."""

    contrast: float = 0.0
    brightness: float = 0.0
    gamma: float = 0.0
    degrees: float = 0.0
    scale: float = 0.0


#: The strength of each ``--augment`` (``dihedral``: none of these).
JITTERS = {
    "dihedral": Jitter(),
    "light": Jitter(contrast=0.2, brightness=0.05, gamma=0.2),
    "strong": Jitter(contrast=0.3, brightness=0.1, gamma=0.35, degrees=15.0, scale=0.15),
}


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


def augment(
    img: np.ndarray, crop: int, rng: np.random.Generator, mode: str = "dihedral"
) -> np.ndarray:
    """Training augmentation: a random crop (rotated and scaled a little with ``strong``), a
    random one of the 8 dihedral transforms, then (``light``, ``strong``) each channel's
    brightness, contrast and gamma jittered. ``mode`` is one of ``AUGMENTS``."""
    jitter = JITTERS[mode]
    if jitter.degrees or jitter.scale:
        out = _warped_crop(img, crop, rng, jitter)
    else:
        out = random_crop(img, crop, rng)
    out = dihedral(out, int(rng.integers(0, NUM_DIHEDRAL)))
    if jitter.contrast or jitter.brightness or jitter.gamma:
        out = _intensity(out, rng, jitter)
    return out


def _warped_crop(
    img: np.ndarray, crop: int, rng: np.random.Generator, jitter: Jitter
) -> np.ndarray:
    """A random ``crop x crop`` window rotated by a small angle and scaled about its centre,
    its pixels taken from the image around it (reflected beyond the image's edges)."""
    import cv2

    if not _CV2_THREADS:  # one thread: DataLoader workers are the parallelism
        cv2.setNumThreads(1)
        _CV2_THREADS.append(1)
    _, h, w = img.shape
    ch, cw = min(crop, h), min(crop, w)
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    angle = float(rng.uniform(-jitter.degrees, jitter.degrees))
    scale = float(1.0 + rng.uniform(-jitter.scale, jitter.scale))
    matrix = cv2.getRotationMatrix2D((left + (cw - 1) / 2, top + (ch - 1) / 2), angle, scale)
    matrix[0, 2] -= left  # the window's centre lands on the output's centre
    matrix[1, 2] -= top
    out = np.empty((img.shape[0], ch, cw), dtype=img.dtype)
    for c in range(img.shape[0]):  # one plane at a time: a cached sample's map is not copied
        out[c] = cv2.warpAffine(
            np.ascontiguousarray(img[c]),
            matrix,
            (cw, ch),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
    return out


_CV2_THREADS: list[int] = []


def _intensity(img: np.ndarray, rng: np.random.Generator, jitter: Jitter) -> np.ndarray:
    """Each channel through its own curve: ``clip(contrast * (v ** gamma) + brightness)`` on
    the 0..1 scale (a 256-entry lookup table per channel)."""
    channels = img.shape[0]
    contrast: np.ndarray = 1.0 + rng.uniform(-jitter.contrast, jitter.contrast, size=(channels,))
    brightness: np.ndarray = rng.uniform(-jitter.brightness, jitter.brightness, size=(channels,))
    gamma: np.ndarray = np.exp(rng.uniform(-jitter.gamma, jitter.gamma, size=(channels,)))
    levels = np.arange(256, dtype=np.float64) / 255.0
    out = np.empty(img.shape, dtype=np.uint8)
    for c in range(channels):
        curve = contrast[c] * levels ** gamma[c] + brightness[c]
        lut = np.clip(np.rint(curve * 255.0), 0, 255).astype(np.uint8)
        out[c] = lut[img[c]]
    return out


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
