"""The pieces of crop-TTA scoring: windows, rank shares, aggregation, labels, and the exact
bytes of the submission, probabilities and failures files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.engine.scoring.predict_files import (
    failures_path_for,
    partial_path,
    write_failures,
    write_probabilities,
    write_submission,
)
from hpatool.engine.scoring.score import Scores, aggregate, decide_labels, rank_share
from hpatool.engine.views import View, crop_windows, grid_windows
from hpatool.errors import DataError, UsageError


def test_crop_windows_depend_only_on_seed_and_position() -> None:
    a = crop_windows(3, 64, 64, 32, 5, seed=0)
    assert a == crop_windows(3, 64, 64, 32, 5, seed=0)
    assert a != crop_windows(4, 64, 64, 32, 5, seed=0)
    assert a != crop_windows(3, 64, 64, 32, 5, seed=1)
    assert len(a) == 5 and all(0 <= t <= 32 and 0 <= left <= 32 for t, left in a)
    assert crop_windows(0, 48, 48, 48, 8, seed=0) == [(0, 0)]  # the crop is the whole image


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 4, 1), (10, 4, 2), (9, 2, 3), (3, 4, 2)])
def test_rank_shares_cover_every_image_once(n: int, batch: int, world: int) -> None:
    shares = [rank_share(n, batch, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    # Whole batches, in dataset order: the same batches whatever the number of processes.
    batches = {tuple(s[k : k + batch]) for s in shares for k in range(0, len(s), batch)}
    assert batches == {tuple(range(s, min(s + batch, n))) for s in range(0, n, batch)}


def test_aggregate_max_and_mean() -> None:
    crops = torch.tensor([[0.1, 0.9], [0.3, 0.5]])
    assert aggregate(crops, "max") == pytest.approx([0.3, 0.9])
    assert aggregate(crops, "mean") == pytest.approx([0.2, 0.7])
    assert aggregate(crops, "max").dtype == np.float64
    with pytest.raises(UsageError, match="--agg 'median' is invalid"):
        aggregate(crops, "median")


def test_decide_labels_tops_up_to_min_labels() -> None:
    probs = np.array([0.2, 0.7, 0.4, 0.9])
    thr = np.full(4, 0.5)
    assert decide_labels(probs, thr, 0) == [1, 3]
    assert decide_labels(probs, thr, 3) == [1, 2, 3]
    assert decide_labels(probs, np.full(4, 0.95), 1) == [3]
    assert decide_labels(probs, np.full(4, 0.95), 0) == []


def test_file_names_and_bytes(tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    assert partial_path(out).name == "submission.partial.csv"
    assert failures_path_for(out).name == "submission.failures.csv"
    assert partial_path(tmp_path / "sub").name == "sub.partial.csv"
    write_submission(out, ["a", "b"], [[0, 16], []])
    assert out.read_bytes() == b"Id,Predicted\na,0 16\nb,\n"
    probs = tmp_path / "probs.csv"
    row = np.linspace(0, 1, 28)
    row32 = np.random.default_rng(0).random(28).astype(np.float32)  # a model's own sigmoid
    write_probabilities(probs, ["a", "b"], [row, row32.astype(np.float64)])
    lines = probs.read_text().splitlines()
    assert lines[0] == "Id," + ",".join(str(c) for c in range(28))
    assert lines[1].startswith("a,0.0,0.037037037037037035,") and lines[1].endswith(",1.0")
    # full precision: read back, the very float64s (and float32s) that were written
    back = [np.array([float(v) for v in line.split(",")[1:]]) for line in lines[1:]]
    assert np.array_equal(back[0], row)
    assert np.array_equal(back[1].astype(np.float32), row32)
    assert np.array_equal(back[1], row32.astype(np.float64))
    fails = tmp_path / "submission.failures.csv"
    write_failures(fails, {"a": "no such file", "b": "bad, truncated"})
    assert fails.read_bytes() == b'Id,error\na,no such file\nb,"bad, truncated"\n'


# ------------------------------------------------------------------ checks before any scoring


def write_sample(root: Path, sample_id: str, size: int | tuple[int, ...]) -> None:
    """Four greyscale PNGs; ``size`` one edge for all, or one per channel (R, G, B, Y)."""
    from hpatool.imaging import save_png

    sizes = (size,) * 4 if isinstance(size, int) else size
    for colour, edge in zip(("red", "green", "blue", "yellow"), sizes, strict=True):
        save_png(np.zeros((edge, edge), np.uint8), root / f"{sample_id}_{colour}.png")


def test_check_images_leaves_out_unreadable_and_too_small_images(tmp_path: Path) -> None:
    from hpatool.engine.scoring.score import UNREADABLE, ScoreItem, check_images, too_small

    for name, size in (("a", 48), ("b", 48), ("c", 24), ("d", (48, 48, 40, 48)), ("e", 64)):
        write_sample(tmp_path, name, size)
    (tmp_path / "b_yellow.png").write_bytes(b"not a png")
    items = [ScoreItem(i, tmp_path, n) for i, n in enumerate("abcde")]
    checked = check_images(items, None, 32, "syn")
    assert [t.id for t in checked.items] == ["a", "e"]
    assert (checked.crop, checked.whole_image) == (32, False)
    assert checked.left_out == {UNREADABLE: 2, too_small(32): 1}
    assert set(checked.errors) == {1, 2, 3}
    assert str(tmp_path / "b_yellow.png") in checked.errors[1]
    assert checked.errors[2] == "sample 'c' is 24x24, smaller than the 32px crop"
    assert "channels differ in size (red 48x48, green 48x48, blue 40x40" in checked.errors[3]
    whole = check_images(items, 48, 32, "syn")  # --crop-size 48: the first image, whole
    assert whole.whole_image and [t.id for t in whole.items] == ["a", "e"]


def test_check_images_refuses_a_crop_larger_than_the_images(tmp_path: Path) -> None:
    from hpatool.engine.scoring.score import ScoreItem, check_images

    write_sample(tmp_path, "a", 48)
    items = [ScoreItem(0, tmp_path, "a")]
    with pytest.raises(UsageError, match=r"--crop-size 64 is larger than the 48x48 images"):
        check_images(items, 64, 32, "syn")
    with pytest.raises(UsageError, match=r"the run's training crop 64 is larger than"):
        check_images(items, None, 64, "syn")
    (tmp_path / "a_red.png").unlink()
    with pytest.raises(DataError, match=r"none of the 1 images of dataset 'syn' can be read"):
        check_images(items, None, 32, "syn")


def test_scoring_gives_both_aggregations_of_the_same_crops(tmp_path: Path) -> None:
    from torch import nn

    from hpatool.engine.scoring.score import ScoreItem, score
    from hpatool.imaging import save_png

    rng = np.random.default_rng(0)
    for name in "ab":
        for colour in ("red", "green", "blue", "yellow"):
            pixels = rng.integers(0, 255, (40, 40), dtype=np.uint8)
            save_png(pixels, tmp_path / f"{name}_{colour}.png")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 28, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    items = [ScoreItem(i, tmp_path, n) for i, n in enumerate("ab")]

    def run(agg: str, both: bool = False) -> Scores:
        return score(
            model, items, View(16, 5, agg, "crops"), mean=(0.0,) * 4, std=(1.0,) * 4,
            batch_size=2, workers=0, device=torch.device("cpu"), seed=3, both=both,
        )  # fmt: skip

    both, mean = run("max", both=True), run("mean")
    assert not mean.other and set(both.other) == {0, 1}
    for i in (0, 1):
        assert np.allclose(both.other[i], mean.probs[i])  # the same crops, aggregated by mean
        assert (both.probs[i] >= both.other[i] - 1e-9).all()
        assert (both.probs[i] > both.other[i] + 1e-6).any()


# ------------------------------------------------------------------------------ views (TTA)


def test_views_of_each_tta_mode() -> None:
    from hpatool.engine.views import view_windows

    # --crops 1 is the centre crop (the validation view) for the random-crop modes
    for tta in ("crops", "crops+flips"):
        assert view_windows(5, 64, 80, 32, 1, 0, tta) == [(16, 24, 0)]
    # crops: random windows, untransformed (the same windows as before views)
    crops = view_windows(3, 64, 64, 32, 5, 0, "crops")
    assert [(t, left) for t, left, _ in crops] == crop_windows(3, 64, 64, 32, 5, seed=0)
    assert {k for _, _, k in crops} == {0}
    # grid: the 2x2 windows covering the image, whatever --crops says
    grid = [(0, 0, 0), (0, 32, 0), (32, 0, 0), (32, 32, 0)]
    assert view_windows(3, 64, 64, 32, 5, 0, "grid") == grid
    assert view_windows(3, 64, 64, 32, 1, 0, "grid") == grid
    # flips and grid+flips: every grid window under the first N transforms, N capped at 8
    for tta in ("flips", "grid+flips"):
        assert view_windows(3, 64, 64, 32, 3, 0, tta) == [
            (t, left, k) for t, left, _ in grid for k in range(3)
        ]
        assert len(view_windows(3, 64, 64, 32, 12, 0, tta)) == 4 * 8
    # crops+flips: the random windows, window i under transform i mod 8
    both = view_windows(3, 64, 64, 32, 10, 0, "crops+flips")
    assert [(t, left) for t, left, _ in both] == crop_windows(3, 64, 64, 32, 10, seed=0)
    assert [k for _, _, k in both] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    # the crop fills the image: one window for crops and grid; the whole image flipped for
    # the others
    for tta in ("crops", "grid"):
        assert view_windows(3, 48, 48, 48, 8, 0, tta) == [(0, 0, 0)]
    for tta in ("flips", "crops+flips", "grid+flips"):
        assert view_windows(3, 48, 48, 48, 8, 0, tta) == [(0, 0, k) for k in range(8)]
    with pytest.raises(UsageError, match="--tta 'rotate' is invalid"):
        view_windows(3, 48, 48, 32, 8, 0, "rotate")


@pytest.mark.parametrize(
    ("height", "width", "crop"),
    [(512, 512, 256), (512, 512, 224), (512, 512, 500), (64, 80, 32), (300, 200, 128),
     (1024, 1024, 512), (100, 100, 100), (97, 61, 30), (512, 512, 1)],
)  # fmt: skip
def test_grid_windows_cover_every_pixel(height: int, width: int, crop: int) -> None:
    windows = grid_windows(height, width, crop)
    covered = np.zeros((height, width), dtype=np.int64)
    for top, left in windows:
        assert 0 <= top <= height - crop and 0 <= left <= width - crop
        covered[top : top + crop, left : left + crop] += 1
    assert covered.min() >= 1  # every pixel is seen
    # at most ceil(H / crop) x ceil(W / crop) windows, as the docs say
    assert len(windows) == -(-height // crop) * -(-width // crop)
    assert len(set(windows)) == len(windows)
    assert View(crop, 8, "max", "grid").windows((height, width)) == len(windows)


def test_grid_of_256px_windows_of_a_512px_image_are_its_four_quarters() -> None:
    assert grid_windows(512, 512, 256) == [(0, 0), (0, 256), (256, 0), (256, 256)]
    # 224 px: 3 x 3 windows at 0, 144, 288 (overlapping by 80 px)
    assert grid_windows(512, 512, 224) == [
        (t, left) for t in (0, 144, 288) for left in (0, 144, 288)
    ]


@pytest.mark.parametrize(
    ("tta", "crops", "size", "text"),
    [
        ("crops", 8, 64, "max of 8 crops of 32px"),
        ("crops", 1, 64, "the centre crop of 32px"),
        ("crops", 8, 32, "1 window of 32px (the whole image)"),
        ("grid", 8, 64, "max of 4 windows of 32px covering the 64x64 image"),
        ("grid", 8, 32, "1 window of 32px (the whole image)"),
        ("flips", 8, 64, "max of 4 windows of 32px covering the 64x64 image, each under 8 "
         "flips/rotations (32 views)"),
        ("grid+flips", 2, 64, "max of 4 windows of 32px covering the 64x64 image, each under 2 "
         "flips/rotations (8 views)"),
        ("flips", 12, 32, "max of 8 flips/rotations of the whole 32px image"),
        ("flips", 1, 32, "1 window of 32px (the whole image)"),
        ("crops+flips", 4, 64, "max of 4 flipped/rotated crops of 32px"),
        ("crops+flips", 4, 32, "max of 4 flips/rotations of the whole 32px image"),
        ("crops+flips", 1, 64, "the centre crop of 32px"),
    ],
)  # fmt: skip
def test_view_text_says_what_really_happens(tta: str, crops: int, size: int, text: str) -> None:
    assert View(32, crops, "max", tta).text((size, size)) == text


def test_resolve_view_given_over_stored_over_default() -> None:
    from hpatool.engine.views import View, resolve_view

    stored = View.from_json({"crop": 32, "crops": 4, "agg": "mean", "tta": "flips"})
    assert resolve_view(32, None, None, None, stored) == View(32, 4, "mean", "flips")
    assert resolve_view(32, 2, None, "crops", stored) == View(32, 2, "mean", "crops")
    # a run that stores no view was tuned on random crops, as predict was then
    assert resolve_view(48, None, None, None, None) == View(48, 8, "max", "crops")
    # a stored view without a tta (older runs): random crops
    assert View.from_json({"crop": 32, "crops": 4, "agg": "max"}) == View(32, 4, "max", "crops")
    assert View.from_json({"crops": "x"}) is None


def test_flipped_views_are_the_dihedral_transforms_of_the_crop(tmp_path: Path) -> None:
    from hpatool.data.transforms import dihedral
    from hpatool.engine.scoring.score import CropDataset, ScoreItem
    from hpatool.imaging import read_sample, save_png

    rng = np.random.default_rng(1)
    for colour in ("red", "green", "blue", "yellow"):
        save_png(rng.integers(0, 255, (24, 24), dtype=np.uint8), tmp_path / f"a_{colour}.png")
    img = read_sample(tmp_path, "a")
    items = [ScoreItem(0, tmp_path, "a")]
    _, views, _ = CropDataset(items, View(16, 8, "max", "flips"), 0)[0]
    # every window of the 2x2 grid (corners at 0 and 8) under each of the 8 transforms
    assert views is not None and views.shape == (4 * 8, 4, 16, 16)
    for w, (top, left) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        window = img[:, top : top + 16, left : left + 16]
        for k in range(8):
            expected = torch.from_numpy(np.ascontiguousarray(dihedral(window, k)))
            assert torch.equal(views[w * 8 + k], expected)
    _, whole, _ = CropDataset(items, View(24, 3, "max", "crops+flips"), 0)[0]
    assert whole is not None and whole.shape == (3, 4, 24, 24)
    assert torch.equal(whole[2], torch.from_numpy(np.ascontiguousarray(dihedral(img, 2))))


def test_frequency_drift_rule() -> None:
    from hpatool.engine.scoring.predict import frequency_drift

    train = np.zeros(28)
    train[[0, 1, 2, 3]] = [0.5, 0.3, 0.01, 0.04]
    labels = [[0, 2] if i < 10 else [0] for i in range(20)]  # 0: 100%, 2: 50%, 1 and 3: 0%
    text = frequency_drift(labels, train)
    # 0: 100% vs 50% is not 3x; 1: 0% vs 30% is; 2: 50% vs 1% is; 3: 0% vs 4% is under 5 points
    assert text == (
        "predicted class frequencies far from the training data's, of 20 images: "
        "2 Nucleoli 50.0% (training 1.0%); 1 Nuclear membrane 0.0% (training 30.0%); "
        "check the thresholds (thresholds.json; an ensemble's are tuned on its runs' oof.csv) "
        "or pass --threshold 0.5"
    )
    assert frequency_drift(labels[:19], train) == ""  # under 20 images: no warning
    assert frequency_drift(labels, None) == ""  # a run without class_frequency


# ------------------------------------------------------------------------------ precision


def _four_channel_images(tmp_path: Path, names: str, size: int = 40) -> None:
    from hpatool.imaging import save_png

    rng = np.random.default_rng(0)
    for name in names:
        for colour in ("red", "green", "blue", "yellow"):
            save_png(
                rng.integers(0, 255, (size, size), dtype=np.uint8),
                tmp_path / f"{name}_{colour}.png",
            )


def test_scoring_in_bf16_gives_finite_probabilities_close_to_float32(tmp_path: Path) -> None:
    """The run's training dtype is used at scoring (bf16 where it trained in bf16): CPU
    autocast bf16 is the same code path as CUDA's. Tolerance: 0.02 absolute on probabilities
    (bf16 keeps 8 bits of mantissa)."""
    from torch import nn

    from hpatool.engine.scoring.score import ScoreItem, score

    _four_channel_images(tmp_path, "abc")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 16, 3), nn.ReLU(), nn.Conv2d(16, 28, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()
    items = [ScoreItem(i, tmp_path, n) for i, n in enumerate("abc")]

    def run(dtype: torch.dtype | None) -> Scores:
        return score(
            model, items, View(16, 8, "mean", "grid+flips"), mean=(0.5,) * 4, std=(0.25,) * 4,
            batch_size=2, workers=0, device=torch.device("cpu"), seed=0, amp_dtype=dtype,
        )  # fmt: skip

    full, half = run(None), run(torch.bfloat16)
    for i in range(3):
        assert np.isfinite(half.probs[i]).all()
        assert np.abs(half.probs[i] - full.probs[i]).max() < 0.02
    assert any(not np.array_equal(half.probs[i], full.probs[i]) for i in range(3))  # it ran bf16


def test_scoring_dtype_follows_the_run() -> None:
    from hpatool.engine.models.checkpoint import trained_amp
    from hpatool.engine.scoring.score import scoring_dtype

    cpu = torch.device("cpu")
    assert scoring_dtype("bfloat16", cpu) is torch.bfloat16
    assert scoring_dtype(None, cpu) is None  # --no-amp (or a CPU run): float32
    assert scoring_dtype("float16", cpu) is None  # no fp16 autocast on the CPU: float32
    assert trained_amp({"config": {"amp": "bfloat16"}}) == "bfloat16"
    assert trained_amp({"config": {"amp": None}}) is None
    assert trained_amp({"model": {}}) == "float16"  # a bare checkpoint: autocast's default


def test_a_non_finite_probability_names_the_model_and_the_sample(tmp_path: Path) -> None:
    from torch import nn

    from hpatool.engine.scoring.score import ScoreItem, score
    from hpatool.errors import WorkFailed

    _four_channel_images(tmp_path, "ab")

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 28)
            out[-1, 5] = float("nan")  # the last view of the batch: sample 'b'
            return out

    items = [ScoreItem(i, tmp_path, n) for i, n in enumerate("ab")]
    with pytest.raises(WorkFailed) as info:
        score(
            Broken(), items, View(16, 1, "max", "crops"), mean=(0.0,) * 4, std=(1.0,) * 4,
            batch_size=2, workers=0, device=torch.device("cpu"), seed=0, model_name="run r1",
        )  # fmt: skip
    assert str(info.value).startswith(
        "run r1 gave non-finite probabilities (NaN or inf) for sample 'b'"
    )


def test_grid_views_of_real_512px_samples_are_their_quarters(real_samples: Path) -> None:
    """On real Kaggle images (512 px, four 8-bit stains): the default grid at crop 256 is the
    four quarters, every pixel seen once; grid+flips flips each quarter, not the centre."""
    from hpatool.data.transforms import dihedral
    from hpatool.engine.scoring.score import CropDataset, ScoreItem
    from hpatool.imaging import read_sample

    root = real_samples / "kaggle_train_512"
    sample_id = sorted(p.name[: -len("_red.png")] for p in root.glob("*_red.png"))[0]
    img = read_sample(root, sample_id)
    assert img.shape == (4, 512, 512)
    items = [ScoreItem(0, root, sample_id)]
    _, views, _ = CropDataset(items, View(256), 0)[0]
    assert views is not None and views.shape == (4, 4, 256, 256)
    quarters = [img[:, t : t + 256, left : left + 256] for t in (0, 256) for left in (0, 256)]
    for got, quarter in zip(views, quarters, strict=True):
        assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(quarter)))
    _, flipped, _ = CropDataset(items, View(256, 2, "mean", "grid+flips"), 0)[0]
    assert flipped is not None and flipped.shape == (8, 4, 256, 256)
    for w, quarter in enumerate(quarters):
        rotated = torch.from_numpy(np.ascontiguousarray(dihedral(quarter, 1)))
        assert torch.equal(flipped[2 * w + 1], rotated)
