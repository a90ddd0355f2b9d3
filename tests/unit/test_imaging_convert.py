"""Raw image -> 8-bit greyscale channel: channel rules, draft-mode decode, 16-bit stretch."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.errors import DataError, UsageError
from hpatool.imaging import (
    MAX_PIXELS,
    BadImage,
    check_channel_rule,
    check_decodes,
    convert_channel,
    image_to_array,
    read_channel,
    select_stain,
    to_uint8,
)
from tests.integration.hpa_server import fluorescence, stain_rgb
from tests.support import claimed_size_png


def rgb_jpeg(path: Path, colour: str, size: int = 256, seed: int = 0, quality: int = 92) -> Path:
    Image.fromarray(stain_rgb(fluorescence(seed, size), colour)).save(path, quality=quality)
    return path


def test_stain_rule_takes_the_stains_own_band() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 200
    img = Image.fromarray(rgb)
    for colour, value in (("red", 10), ("green", 20), ("blue", 200), ("yellow", 10)):
        out = select_stain(img, colour, "stain")
        assert out.mode == "L"
        assert np.asarray(out).max() == value
    # luma is PIL's convert("L"): it dims a pure blue stain to about 11 %
    luma = np.asarray(
        select_stain(
            Image.fromarray(stain_rgb(np.full((4, 4), 200, np.uint8), "blue")), "blue", "luma"
        )
    )
    assert 20 <= luma.max() <= 25


def test_greyscale_modes_become_l() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(np.asarray(select_stain(Image.fromarray(grey), "red")), grey)
    for mode in ("P", "RGBA", "LA", "1", "CMYK"):
        img = Image.fromarray(grey).convert(mode)
        assert select_stain(img, "green").mode == "L", mode
    deep = Image.fromarray((grey.astype(np.int32) * 100), mode="I")
    out = np.asarray(select_stain(deep, "green"))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    flt = Image.fromarray(grey.astype(np.float32) / 255.0, mode="F")
    assert select_stain(flt, "blue").mode == "L"


def test_unknown_rule_and_colour() -> None:
    with pytest.raises(UsageError, match="stain, luma"):
        check_channel_rule("average")
    with pytest.raises(ValueError, match="colour"):
        select_stain(Image.new("RGB", (2, 2)), "purple")


def test_stretch_keeps_to_uint8_for_8_bit_and_handles_flat_images() -> None:
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_uint8(arr) is arr
    assert not to_uint8(np.full((8, 8), 7, dtype=np.uint16)).any()
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    out = to_uint8(ramp)
    assert out.min() == 0 and out.max() == 255
    assert np.abs(out.astype(int) - (ramp / 257.0)).max() <= 1.5
    sparse = np.zeros((100, 100), dtype=np.uint16)
    sparse[0, 0] = 1000  # the 99.9th percentile is the minimum: use the maximum
    assert to_uint8(sparse)[0, 0] == 255


def test_real_16_bit_field_comes_out_with_visible_structure(portal_field: Path) -> None:
    with Image.open(portal_field) as img:
        assert img.mode.startswith("I;16")
        raw = image_to_array(img)
    plain = to_uint8(raw, percentile=100)
    assert plain.std() < 5  # min..max alone leaves this field nearly black
    out = convert_channel(portal_field, "green", 512)
    assert out.shape == (512, 512) and out.dtype == np.uint8
    assert out.std() > 10
    assert (out == 255).mean() < 0.05
    assert out.mean() > 3
    full = convert_channel(portal_field, "green", 0)
    assert full.shape == (2048, 2048)
    assert (full == 255).mean() < 0.005 and full.std() > 15


def test_draft_decode_matches_full_decode_and_lanczos(tmp_path: Path) -> None:
    path = rgb_jpeg(tmp_path / "x_green.jpg", "green", size=1024)
    fast = convert_channel(path, "green", 256)
    with Image.open(path) as img:
        img.load()
        full = np.asarray(img.getchannel(1).resize((256, 256), Image.Resampling.LANCZOS))
    assert fast.shape == (256, 256)
    assert np.abs(fast.astype(int) - full).mean() <= 2.0
    luma = convert_channel(path, "green", 256, "luma")
    with Image.open(path) as img:
        full_l = np.asarray(img.convert("L").resize((256, 256), Image.Resampling.LANCZOS))
    assert np.abs(luma.astype(int) - full_l).mean() <= 2.0


def test_sizes(tmp_path: Path) -> None:
    wide = tmp_path / "w_red.png"
    Image.fromarray(fluorescence(1, 96)[:, :64]).save(wide)
    assert convert_channel(wide, "red", 32).shape == (32, 32)  # stretched to a square
    assert convert_channel(wide, "red", 0).shape == (96, 64)  # size 0 keeps it
    assert convert_channel(wide, "red", 128).shape == (128, 128)  # small images grow


def test_bad_files_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    good = rgb_jpeg(tmp_path / "a_red.jpg", "red")
    truncated = tmp_path / "b_red.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    html = tmp_path / "c_red.jpg"
    html.write_bytes(b"<html>404</html>")
    for bad in (truncated, html, tmp_path / "missing_red.jpg"):
        with pytest.raises(DataError, match=str(bad.name)):
            convert_channel(bad, "red", 64)
        with pytest.raises(DataError, match=str(bad.name)):
            check_decodes(bad)
    assert check_decodes(good) == (256, 256)
    buf = io.BytesIO()
    Image.new("I;16", (8, 8)).save(buf, "PNG")
    (tmp_path / "d_red.png").write_bytes(buf.getvalue())
    assert check_decodes(tmp_path / "d_red.png") == (8, 8)


# ------------------------------------------------------------------- the one pixel limit


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(60_000, 60_000, "more than 800,000,000 pixels"), (20_001, 20_000, "20001x20000")],
)
def test_images_over_the_pixel_limit_are_bad_images(
    tmp_path: Path, width: int, height: int, size: str
) -> None:
    """Above twice Pillow's limit (its DecompressionBombError, not an OSError) and between once
    and twice it (only a warning from Pillow) alike: a ``BadImage`` naming the file (no stray
    warning on stderr either: ``tests/integration/test_pixel_limit.py`` runs the real CLI)."""
    path = claimed_size_png(tmp_path / "x_red.png", width, height)
    reason = (
        f"image of {size} is over the limit of {MAX_PIXELS:,} pixels (a real HPA field has 4-16 "
        "million); replace the file"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI's filter; pytest's collection drops it
        for read in (
            read_channel,
            check_decodes,
            lambda p: convert_channel(p, "red", 32),
            lambda p: convert_channel(p, "red", 0),
        ):
            with pytest.raises(BadImage) as info:
                read(path)
            assert str(info.value) == f"{path}: {reason}"


def test_the_pixel_limit_is_set_once_for_pillow() -> None:
    assert MAX_PIXELS == 400_000_000 and Image.MAX_IMAGE_PIXELS == MAX_PIXELS
