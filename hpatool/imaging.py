"""Image helpers: reading a 4-channel sample, bit-depth conversion, composites. Pure functions.

A sample on disk is four 8-bit greyscale PNGs ``<root>/<Id>_{red,green,blue,yellow}.png``; in
memory it is a ``(4, H, W)`` uint8 array in channel order R, G, B, Y.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hpatool._io import atomic_path
from hpatool.errors import DataError
from hpatool.ids import COLOURS, channel_path

# Pillow refuses images above ~179 Mpx as a "decompression bomb"; HPA fields are at most
# 4-16 Mpx, so keep a guard but a generous one.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an image of any integer or float depth to uint8.

    uint8 passes through. Anything else (16-bit fields, float) is stretched linearly over its
    own full range, min to max, so a 16-bit field that only uses the low few thousand grey
    levels still comes out with visible structure. A constant image maps to 0.
    """
    if arr.dtype == np.uint8:
        return arr
    data = arr.astype(np.float64, copy=False)
    lo = float(np.min(data))
    hi = float(np.max(data))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (data - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image as a 2-D array in its own depth (greyscale) or 3-D (colour)."""
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img.convert("I"), dtype=np.int32)
    return np.asarray(img)


def read_channel(path: Path) -> np.ndarray:
    """One 8-bit greyscale channel file as a 2-D uint8 array, with a clear error if it isn't."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode != "L":
                raise DataError(
                    f"{path}: mode {mode}, expected 8-bit greyscale (L); convert it with "
                    "'hpatool preprocess'"
                )
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: missing channel file") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def read_sample(root: Path, sample_id: str) -> np.ndarray:
    """The four stains of a sample as a ``(4, H, W)`` uint8 array (R, G, B, Y)."""
    channels = [read_channel(channel_path(root, sample_id, c)) for c in COLOURS]
    shapes = {c.shape for c in channels}
    if len(shapes) != 1:
        sizes = ", ".join(f"{col} {ch.shape[1]}x{ch.shape[0]}" for col, ch in zip(COLOURS, channels, strict=True))
        raise DataError(f"{root / sample_id}: channels differ in size ({sizes})")
    return np.stack(channels)


def composite(sample: np.ndarray) -> np.ndarray:
    """The usual HPA colour picture, ``(H, W, 3)`` uint8: R = red + yellow/2, G = green + yellow/2,
    B = blue (yellow is shown as red + green)."""
    r, g, b, y = (sample[i].astype(np.float32) for i in range(4))
    rgb = np.stack([r + y / 2, g + y / 2, b], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save_png(arr: np.ndarray, path: Path, compress_level: int = 1) -> None:
    """Write a uint8 greyscale (2-D) or RGB (H, W, 3) array as PNG, atomically."""
    img = Image.fromarray(np.ascontiguousarray(arr))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=compress_level)
