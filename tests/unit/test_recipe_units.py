"""Issue 19's pieces in isolation: ``--augment`` (deterministic, what it moves), the EMA's
update rule, and prior-matched thresholds (the target counts hit, the file read strictly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hpatool.data.transforms import AUGMENTS, augment, dihedral, random_crop
from hpatool.engine.parsing import parse_prior, read_shares
from hpatool.engine.scoring.prior import prior_thresholds
from hpatool.engine.training.ema import ModelEma
from hpatool.errors import DataError, NotFound, UsageError


def _image(seed: int = 0, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (4, size, size), dtype=np.uint8)


# ------------------------------------------------------------------------------ --augment


@pytest.mark.parametrize("mode", AUGMENTS)
def test_each_augmentation_is_deterministic_per_seed_and_varies_across_seeds(mode: str) -> None:
    img = _image()
    a = augment(img, 24, np.random.default_rng(7), mode)
    b = augment(img, 24, np.random.default_rng(7), mode)
    assert a.shape == (4, 24, 24) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    others = [augment(img, 24, np.random.default_rng(s), mode) for s in range(8, 14)]
    assert any(not np.array_equal(a, o) for o in others)


def test_dihedral_draws_exactly_what_training_drew_before_augment_existed() -> None:
    """Runs trained before ``--augment`` resume exactly: the crop, then one of 8 symmetries."""
    img = _image(1)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        old = dihedral(random_crop(img, 24, rng), int(rng.integers(0, 8)))
        assert np.array_equal(augment(img, 24, np.random.default_rng(seed)), old)
        assert np.array_equal(augment(img, 24, np.random.default_rng(seed), "dihedral"), old)


def test_light_jitters_each_channel_by_a_monotone_curve_of_its_own() -> None:
    """light = the dihedral draw, then one increasing intensity curve per channel: the pixels
    keep their order within a channel, the channels move differently."""
    img = _image(2)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        plain = dihedral(random_crop(img, 24, rng), int(rng.integers(0, 8)))
        out = augment(img, 24, np.random.default_rng(seed), "light")
        for c in range(4):
            order = np.argsort(plain[c].ravel(), kind="stable")
            assert np.all(np.diff(out[c].ravel()[order].astype(int)) >= 0)
        moved = [np.abs(out[c].astype(int) - plain[c].astype(int)).mean() for c in range(4)]
        assert max(moved) > 0 and len({round(m, 3) for m in moved}) > 1


def test_light_keeps_black_near_black_and_white_near_white() -> None:
    """The jitter is small: brightness at most 5% of the range, contrast 20%."""
    black = np.zeros((4, 16, 16), np.uint8)
    white = np.full((4, 16, 16), 255, np.uint8)
    for seed in range(20):
        assert augment(black, 16, np.random.default_rng(seed), "light").max() <= 13
        assert augment(white, 16, np.random.default_rng(seed), "light").min() >= 255 * 0.75


def test_strong_rotates_and_scales_the_window_slightly() -> None:
    """A smooth pattern rotated a little is close to, not equal to, the plain window: strong
    moves pixels (not only intensities), and only a little."""
    y, x = np.mgrid[0:64, 0:64]
    plane = (127 + 100 * np.sin(x / 6.0) * np.cos(y / 9.0)).astype(np.uint8)
    img = np.stack([plane] * 4)
    diffs = []
    for seed in range(10):
        out = augment(img, 32, np.random.default_rng(seed), "strong")
        assert out.shape == (4, 32, 32)
        rng = np.random.default_rng(seed)
        plain = random_crop(img, 32, rng)  # the same window position (the first two draws)
        diffs.append(np.abs(out.astype(int) - plain.astype(int)).mean())
    assert all(d > 0 for d in diffs) and np.median(diffs) < 100


def test_an_unknown_augmentation_is_refused_with_the_choices() -> None:
    from hpatool.engine.config import TrainConfig

    with pytest.raises(UsageError, match=r"--augment heavy is invalid; use one of dihedral"):
        TrainConfig(datasets=["d"], augment="heavy").validate()
    with pytest.raises(UsageError, match=r"--ema 1.0 is invalid"):
        TrainConfig(datasets=["d"], ema=1.0).validate()
    with pytest.raises(UsageError, match=r"--keep-checkpoints 0 is invalid"):
        TrainConfig(datasets=["d"], keep_checkpoints=0).validate()


# ------------------------------------------------------------------------------------ EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_the_moving_average_follows_its_formula_with_buffers_and_warm_up() -> None:
    net = _net()
    ema = ModelEma(net, decay=0.9)
    expected = {k: v.clone().double() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for n in range(1, 30):
        net.train()
        loss = net(torch.randn(8, 3)).pow(2).mean()  # BN's running stats move too
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        for key, value in net.state_dict().items():
            if value.is_floating_point():
                expected[key] = d * expected[key] + (1 - d) * value.double()
            else:
                expected[key] = value.clone().double()
    got = ema.module.state_dict()
    for key, value in expected.items():
        assert torch.allclose(got[key].double(), value, atol=1e-6), key
    assert int(got["1.num_batches_tracked"]) == 29  # integer buffers copied, not averaged
    assert not torch.equal(got["0.weight"], net.state_dict()["0.weight"])
    assert ema.updates == 29 and ema.decay_at(1) == pytest.approx(2 / 11)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_the_average_restored_from_its_state_continues_identically() -> None:
    net = _net()
    a = ModelEma(net, 0.99)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1)
        a.update()
    b = ModelEma(net, 0.99)
    b.load(a.module.state_dict(), a.state())
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)
    a.update()
    b.update()
    for key, value in a.module.state_dict().items():
        assert torch.equal(value, b.module.state_dict()[key]), key


# ------------------------------------------------------------------------ prior thresholds


@pytest.mark.parametrize("n", [1, 7, 50, 333])
def test_prior_thresholds_give_each_class_its_share_within_one_image(n: int) -> None:
    rng = np.random.default_rng(n)
    probs = rng.random((n, 28)).astype(np.float32) ** 3
    shares = rng.random(28) * 0.6
    shares[:3] = (0.0, 1.0, 0.5)
    thresholds = prior_thresholds(probs, shares, np.full(28, 0.5))
    counts = (probs >= thresholds).sum(axis=0)
    assert np.all(np.abs(counts - shares * n) <= 1.0)
    assert counts[0] == 0 and counts[1] == n


def test_classes_without_a_share_keep_their_fallback_threshold() -> None:
    probs = np.random.default_rng(0).random((20, 28))
    shares = np.full(28, np.nan)
    shares[4] = 0.25
    fallback = np.linspace(0.1, 0.9, 28)
    out = prior_thresholds(probs, shares, fallback)
    assert np.array_equal(np.delete(out, 4), np.delete(fallback, 4))
    assert (probs[:, 4] >= out[4]).sum() == 5


def test_the_shares_file_is_read_by_index_or_name_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "shares.csv"
    good.write_text("class,share\n0,0.4\nLysosomes,0.01\n 25 ,0.2\n", encoding="utf-8")
    shares = read_shares(good)
    assert shares[0] == 0.4 and shares[10] == 0.01 and shares[25] == 0.2
    assert np.isnan(shares[1])
    cases = {
        "class,share\n28,0.1\n": "line 2: class '28' is not 0..27",
        "class,share\nNucleus,0.1\n": "line 2: class 'Nucleus'",
        "class,share\n0,1.5\n": "line 2: share .1.5. of class .0. is not a number in",
        "class,share\n0,nan\n": "share 'nan'",
        "class,share\n0,0.1\n0,0.2\n": "line 3: class '0' is given twice",
        "klass,share\n0,0.1\n": "needs columns class and share",
        "class,share\n": "names no class",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_shares(bad)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(
        DataError, match="line 1: byte 0xff is not UTF-8 text; save the CSV as UTF-8"
    ):
        read_shares(binary)
    with pytest.raises(NotFound, match="no such file"):
        read_shares(tmp_path / "absent.csv")


def test_threshold_values_of_the_prior_mode_parse() -> None:
    from hpatool.engine.config import parse_threshold

    assert parse_prior("prior") == "training" and parse_prior(" Prior ") == "training"
    assert parse_prior("prior=x/s.csv") == Path("x/s.csv")
    assert parse_prior("auto") is None and parse_prior("0.3") is None
    assert parse_threshold("prior") is None and parse_threshold("prior=f.csv") is None
    with pytest.raises(UsageError, match="prior= names no file"):
        parse_prior("prior=")
