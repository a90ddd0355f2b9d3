"""The perceptual hash of a sample: a 64-bit DCT hash (pHash) of its green and of its blue
channel, 128 bits in all; one sample per call, for the process pool.

pHash of one channel: the image averaged down to 32x32 in floating point (a box filter, so a
dim channel keeps its detail: an 8-bit thumbnail would round a field of grey levels 2-10 into
a few flat steps), its 2-D DCT, and one bit per coefficient of the 8x8 lowest frequencies:
above their median or not. Global brightness and contrast changes, re-encoding (PNG, JPEG)
and rescaling barely move it; a different field moves about half of the bits.

Why green and blue (measured on the real images in ``../shared/data/hpa/real``, see
docs/workflow.md): green is the protein, the part that tells two antibodies apart; blue
(nuclei) is bright and sharp and pins down the field. Red and yellow were the least stable
channels under the HPA server's JPEG compression (quality 50, chroma subsampled), and two
channels read half the files of four.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpatool.ids import channel_path

#: The channels hashed, in the order of the hash's two 64-bit words.
HASHED = ("green", "blue")
#: The size of the thumbnail the DCT is taken of, and of the low-frequency corner kept.
THUMB = 32
CORNER = 8
#: A channel whose thumbnail spans less than this many grey levels has no structure to hash
#: (an empty or constant image): its bits would be rounding noise, so it is not hashed.
FLAT_LEVELS = 1.0

_BIT_VALUES = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


@dataclass(frozen=True)
class HashOutcome:
    """What hashing one sample gave: ``words`` (one uint64 per ``HASHED`` channel), or
    ``flat`` (a channel without structure: left out of matching), or ``error`` (an image
    that cannot be read: the file and why)."""

    words: tuple[int, ...] | None = None
    flat: bool = False
    error: str | None = None


def phash(channel: np.ndarray) -> int | None:
    """The 64-bit pHash of a 2-D greyscale array (any size), or ``None`` if it is flat."""
    from PIL import Image
    from scipy.fft import dct

    height, width = channel.shape
    if height % THUMB == 0 and width % THUMB == 0:  # 512, 1024, 2048 px: block means, exactly
        cells = channel.reshape(THUMB, height // THUMB, THUMB, width // THUMB)
        thumb = cells.sum(axis=(1, 3), dtype=np.int64) / ((height // THUMB) * (width // THUMB))
    else:  # the same box filter, by Pillow, in floating point
        img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode F
        thumb = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float64)
    if float(thumb.max() - thumb.min()) < FLAT_LEVELS:
        return None
    coeffs = dct(dct(thumb, axis=0, norm="ortho"), axis=1, norm="ortho")[:CORNER, :CORNER]
    low = coeffs.ravel()
    bits = low > np.median(low)
    return int(np.bitwise_or.reduce(_BIT_VALUES[bits], initial=np.uint64(0)))


def signature(root: Path, sample_id: str) -> str | None:
    """The size and modification time of the hashed channel files (a stored hash is reused
    while they match), or ``None`` if one is missing."""
    parts = []
    for colour in HASHED:
        try:
            st = os.stat(channel_path(root, sample_id, colour))
        except OSError:
            return None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "/".join(parts)


def hash_sample(root: str, sample_id: str) -> HashOutcome:
    """Hash one sample's ``HASHED`` channels (a pool job: plain arguments, a plain result)."""
    from hpatool.errors import DataError
    from hpatool.imaging import read_channel

    words: list[int] = []
    flat = False
    for colour in HASHED:
        path = channel_path(Path(root), sample_id, colour)
        try:
            value = phash(read_channel(path))
        except (DataError, OSError, ValueError) as exc:  # read_channel's, and a bad id
            return HashOutcome(error=" ".join(str(exc).split()) or type(exc).__name__)
        flat = flat or value is None
        words.append(0 if value is None else value)
    return HashOutcome(flat=True) if flat else HashOutcome(words=tuple(words))
