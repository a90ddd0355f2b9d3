"""The perceptual hash (``hpatool.dedup.hashing``) on real channels: stable under brightness,
contrast, re-encoding and size; half the bits apart for different fields; a flat channel has
none; an unreadable file is an error outcome, not an exception."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.dedup.hashing import HASHED, hash_sample, phash, signature


def _bits(a: int | None, b: int | None) -> int:
    assert a is not None and b is not None
    return bin(a ^ b).count("1")


@pytest.fixture(scope="module")
def channels(real_samples: Path) -> list[np.ndarray]:
    folder = real_samples / "kaggle_train_512"
    ids = sorted(p.name[: -len("_green.png")] for p in folder.glob("*_green.png"))[:10]
    out = []
    for sample_id in ids:
        for colour in HASHED:
            with Image.open(folder / f"{sample_id}_{colour}.png") as img:
                out.append(np.asarray(img))
    return out


def test_small_changes_move_few_bits(channels: list[np.ndarray]) -> None:
    worst = 0
    for ch in channels:
        h = phash(ch)
        brighter = np.clip(ch.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)
        dimmer = (ch.astype(np.float32) * 0.7).astype(np.uint8)
        gamma = (255 * (ch / 255.0) ** 0.8).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(ch).save(buf, format="JPEG", quality=50)
        jpeg = np.asarray(Image.open(buf))
        big = np.asarray(Image.fromarray(ch).resize((1024, 1024), Image.Resampling.BICUBIC))
        for changed in (brighter, dimmer, gamma, jpeg, big):
            worst = max(worst, _bits(h, phash(changed)))
    print(f"most bits moved by a brightness, contrast, JPEG or size change: {worst} of 64")
    assert worst <= 8


def test_different_fields_differ_in_about_half_the_bits(channels: list[np.ndarray]) -> None:
    greens = [phash(c) for c in channels[0::2]]
    apart = [_bits(a, b) for k, a in enumerate(greens) for b in greens[k + 1 :]]
    assert min(apart) >= 14 and 24 <= float(np.mean(apart)) <= 40


def test_flat_channel_has_no_hash() -> None:
    assert phash(np.zeros((512, 512), dtype=np.uint8)) is None
    assert phash(np.full((64, 64), 200, dtype=np.uint8)) is None
    ramp = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    assert phash(ramp) is not None


def test_hash_sample_outcomes(real_samples: Path, tmp_path: Path) -> None:
    folder = real_samples / "kaggle_train_512"
    sample_id = next(folder.glob("*_green.png")).name[: -len("_green.png")]
    ok = hash_sample(str(folder), sample_id)
    assert ok.words is not None and len(ok.words) == 2 and ok.error is None
    assert signature(folder, sample_id) is not None
    for colour in HASHED:
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / f"s_{colour}.png")
    assert hash_sample(str(tmp_path), "s").flat
    (tmp_path / "s_blue.png").write_bytes(b"not a png")
    bad = hash_sample(str(tmp_path), "s")
    assert bad.words is None and bad.error is not None and "s_blue.png" in bad.error
    assert signature(tmp_path, "missing") is None
