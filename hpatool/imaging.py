"""Image helpers: reading a 4-channel sample, bit-depth conversion, composites. Pure functions.

A sample on disk is four 8-bit greyscale PNGs ``<root>/<Id>_{red,green,blue,yellow}.png``; in
memory it is a ``(4, H, W)`` uint8 array in channel order R, G, B, Y.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from hpatool._io import atomic_path
from hpatool.errors import DataError, UsageError
from hpatool.ids import COLOURS, channel_path

#: The most pixels (width x height) hpatool decodes in one image, in every command: real HPA
#: fields are 4-16 Mpx, so this is generous; a header that claims more (a "decompression bomb")
#: makes the file a bad image like any other unreadable one (``open_image``).
MAX_PIXELS = 20_000 * 20_000
# Set once, here: Pillow refuses above twice its limit wherever an image is opened (a backstop);
# its warning between once and twice the limit is replaced by ``open_image``'s refusal.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def image_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image as a 2-D array in its own depth (greyscale) or 3-D (colour)."""
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img.convert("I"), dtype=np.int32)
    return np.asarray(img)


def _regular_file(path: Path | str) -> None:
    """Refuse a path that exists but is not a regular file: a FIFO named like an image would
    block its reader forever, a device never ends. A missing file is left to the open."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise BadImage(
            path, "not a regular file (a FIFO, device or folder); replace it with the image file"
        )


def open_image(path: Path | str | IO[bytes]) -> Image.Image:
    """``Image.open(path)`` (the header only, nothing decoded yet), refusing an image of more
    than ``MAX_PIXELS`` pixels with a ``BadImage`` naming the file. Other failures to open
    (``OSError``, ...) propagate as from ``Image.open``."""
    where = path if isinstance(path, (str, Path)) else "image bytes"
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:
        raise BadImage(where, _too_large(f"more than {2 * MAX_PIXELS:,} pixels")) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise BadImage(where, _too_large(f"{width}x{height}"))
    return img


def _too_large(size: str) -> str:
    return (
        f"image of {size} is over the limit of {MAX_PIXELS:,} pixels (a real HPA field has "
        "4-16 million); replace the file"
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_grey8(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of ``data`` when it is a whole, undamaged 8-bit greyscale PNG (the
    IHDR says so, every chunk's CRC holds, IEND is there); ``None`` for anything else."""
    import struct
    import zlib

    if len(data) < 45 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    if data[24] != 8 or data[25] != 0 or width * height > MAX_PIXELS:  # bit depth, colour type
        return None
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            return None
        kind = data[pos + 4 : pos + 8]
        if zlib.crc32(data[pos + 4 : end]) != struct.unpack(">I", data[end : end + 4])[0]:
            return None
        if kind == b"IEND":
            return height, width
        pos = end + 4
    return None


def _decode_fast(path: Path) -> np.ndarray | None:
    """The channel decoded by pyspng (the fastest decoder measured with identical pixels,
    ``docs/benchmarks.md``) when it is a whole 8-bit greyscale PNG whose chunk checksums hold
    (pyspng does not check them); ``None`` to leave it to Pillow (other formats and modes,
    damaged files: Pillow's messages name what is wrong), or without pyspng."""
    try:
        import pyspng
    except ImportError:
        return None
    data = Path(path).read_bytes()
    size = _png_grey8(data)
    if size is None:
        return None
    try:
        arr = pyspng.load(data)
    except (RuntimeError, ValueError):
        return None
    if arr.dtype != np.uint8 or arr.shape != size:
        return None
    return arr


def read_channel(path: Path) -> np.ndarray:
    """One 8-bit greyscale channel file as a 2-D uint8 array, with a clear error if it isn't
    (pyspng for whole 8-bit greyscale PNGs, Pillow for the rest)."""
    try:
        _regular_file(path)
        fast = _decode_fast(path)
        if fast is not None:
            return fast
        with open_image(path) as img:
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
        sizes = ", ".join(
            f"{col} {ch.shape[1]}x{ch.shape[0]}" for col, ch in zip(COLOURS, channels, strict=True)
        )
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


# ---------------------------------------------------------------- raw images -> channel files
#
# Raw HPA downloads are RGB JPEGs of one stain each; other sources are greyscale or RGB PNGs
# (8 or 16 bit) and TIFFs. These turn any of them into the 8-bit greyscale square a sample's
# channel file holds.

CHANNEL_RULES: tuple[str, ...] = ("stain", "luma")
#: Which RGB band holds each stain under the ``stain`` rule (yellow = red + green: take red).
STAIN_BANDS: dict[str, int] = {"red": 0, "green": 1, "blue": 2, "yellow": 0}
#: Upper percentile used to stretch deep (16-bit, float) images to 8 bits.
STRETCH_PERCENTILE = 99.9

_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class BadImage(DataError):
    """A file that is not a whole image (missing, truncated, not an image at all).

    The message is ``"<path>: <reason>"``; ``path`` and ``reason`` are kept apart so that a
    caller can say it its own way (a download names "the downloaded file", not its ``.part``).
    """

    def __init__(
        self, path: Path | str = "", reason: str = "", *, message: str | None = None
    ) -> None:
        if message is not None:  # torch's DataLoader re-raise in the parent: the whole text
            super().__init__(message)
            path, _, reason = str(self).partition(": ")
        else:
            super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = " ".join(reason.split())


def check_channel_rule(rule: str) -> str:
    """``rule`` if it is a known channel rule, else a ``UsageError`` listing them."""
    if rule not in CHANNEL_RULES:
        raise UsageError(f"unknown channel rule {rule!r}; use one of {', '.join(CHANNEL_RULES)}")
    return rule


def to_uint8(arr: np.ndarray, percentile: float = STRETCH_PERCENTILE) -> np.ndarray:
    """Scale a deep image (16-bit, 32-bit, float) to uint8 over its own range.

    Black is the image's minimum and white its ``percentile``-th percentile (99.9 by default),
    so that a handful of hot pixels do not push a whole 16-bit field into the bottom grey
    levels; the few brighter pixels saturate. If that percentile equals the minimum (a nearly
    empty field) the maximum is used instead; ``percentile=100`` is a plain min-max stretch.
    uint8 passes through.
    """
    if arr.dtype == np.uint8:
        return arr
    data = arr.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0).astype(np.float32)
    sample = data[:: max(1, data.shape[0] // 1024), :: max(1, data.shape[1] // 1024)]
    lo = float(np.min(data))
    hi = float(np.percentile(sample, percentile))
    if hi <= lo:
        hi = float(np.max(data))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (data - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def select_stain(img: Image.Image, colour: str, rule: str = "stain") -> Image.Image:
    """The one stain of a decoded image as an 8-bit greyscale (``L``) image.

    Greyscale input is the stain itself (deep greyscale is stretched with
    :func:`to_uint8`). Colour input follows ``rule``: ``stain`` takes the band that
    holds the stain (red←R, green←G, blue←B, yellow←R), ``luma`` is PIL's ``convert("L")``.
    """
    if colour not in STAIN_BANDS:
        raise ValueError(f"unknown colour {colour!r}; use one of {', '.join(COLOURS)}")
    check_channel_rule(rule)
    mode = img.mode
    if mode == "L":
        return img
    if mode in _DEEP_MODES:
        return Image.fromarray(to_uint8(image_to_array(img)))
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode != "RGB":
        img = img.convert("RGB")  # P, PA, RGBA, RGBX, CMYK, YCbCr, ...
    if rule == "luma":
        return img.convert("L")
    return img.getchannel(STAIN_BANDS[colour])


def open_reduced(path: Path, size: int, rule: str = "stain") -> Image.Image:
    """Open and decode ``path``; a JPEG is decoded in draft mode when ``size`` > 0.

    Draft mode makes libjpeg decode at the smallest of the scales 1/8, 1/4, 1/2 that still
    gives at least ``size``×``size`` pixels (for ``luma`` it also returns libjpeg's own luma, Y,
    the same weights as ``convert("L")``), which is several times faster than a full decode
    followed by a resize and differs from it by well under one grey level on average.
    Raises ``OSError`` (or ``SyntaxError``/``ValueError``) if the file does not decode, and
    ``BadImage`` if it is not a regular file or is over ``MAX_PIXELS``.
    """
    _regular_file(path)
    img = open_image(path)
    try:
        if size > 0 and img.format == "JPEG":
            img.draft("L" if rule == "luma" else img.mode, (size, size))
        img.load()
    except BaseException:
        img.close()
        raise
    return img


def convert_channel(path: Path, colour: str, size: int, rule: str = "stain") -> np.ndarray:
    """One raw image file as the 8-bit greyscale channel array a sample's PNG holds.

    ``size`` > 0 resizes to ``size``×``size`` (LANCZOS, after a draft-mode JPEG decode; a
    non-square field is stretched to a square as the Kaggle images were); ``size`` 0 keeps the
    original size. Raises ``BadImage`` (a ``DataError``) naming the file if it does not decode.
    """
    check_channel_rule(rule)
    try:
        with open_reduced(path, size, rule) as img:
            channel = select_stain(img, colour, rule)
            if size > 0 and channel.size != (size, size):
                channel = channel.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(channel, dtype=np.uint8)
    except FileNotFoundError:
        raise BadImage(path, "no such file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise BadImage(path, f"cannot decode image ({text})") from None


def check_decodes(path: Path | IO[bytes]) -> tuple[int, int]:
    """Decode ``path`` (a file, or bytes in a binary stream) cheaply (a JPEG at 1/8 scale) to
    prove it is a whole image; its size.

    Raises ``BadImage`` (a ``DataError``) naming the file if it is truncated or not an image.
    """
    where = path if isinstance(path, (str, Path)) else "image bytes"
    if isinstance(path, (str, Path)):
        _regular_file(path)
    try:
        with open_image(path) as img:
            size = img.size
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
            return size
    except FileNotFoundError:
        raise BadImage(where, "no such file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise BadImage(where, f"does not decode as an image ({text})") from None
