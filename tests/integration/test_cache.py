"""The decoded sample cache (issue 18): ``datasets cache`` decodes each sample once, byte for
byte the PNGs' pixels; train, evaluate and predict read it when it matches the images and
refuse it when a file changed, was added or removed; a killed build is never taken for a
complete cache and a rerun finishes it; training and prediction give the same numbers with and
without it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.data.cache import cache_folder, read_cached
from hpatool.imaging import read_channel, read_sample
from tests.support import SIZE, TRAIN, Invoke, Workspace, one_line_error, register, start_hpatool


def _ids(labels: Path) -> list[str]:
    return [line.split(",")[0] for line in labels.read_text().splitlines()[1:]]


def test_cache_of_real_samples_is_byte_identical_to_the_pngs(
    cli: Invoke, home: Path, real_samples: Path
) -> None:
    root = real_samples / "kaggle_train_512"
    assert cli("datasets", "add", "real", "--labels", root / "labels.csv", "--root", root)
    res = cli("datasets", "cache", "real", "--workers", "2", "--json")
    assert res.exit_code == 0, res.output
    (doc,) = json.loads(res.stdout)
    assert (doc["samples"], doc["decoded"], doc["complete"]) == (60, 60, True)
    folder = cache_folder(home, "real")
    for sid in _ids(root / "labels.csv"):
        cached = read_cached(folder / f"{sid}.npy", sid)
        assert cached.shape == (4, 512, 512) and cached.dtype == np.uint8
        assert np.array_equal(np.asarray(cached), read_sample(root, sid))
    # the fast decoder gives Pillow's pixels on every real channel file
    from PIL import Image

    for path in sorted(root.glob("*.png"))[:40]:
        with Image.open(path) as img:
            assert np.array_equal(read_channel(path), np.asarray(img))
    again = json.loads(cli("datasets", "cache", "real", "--json").stdout)[0]
    assert (again["decoded"], again["reused"]) == (0, 60)
    shown = json.loads(cli("datasets", "show", "real", "--json").stdout)
    assert shown["cache"]["complete"] and shown["cache"]["samples"] == 60
    assert shown["cache"]["bytes"] >= 60 * 4 * 512 * 512


def test_damaged_png_is_left_to_pillow_and_named(tmp_path: Path, real_samples: Path) -> None:
    """pyspng does not check chunk checksums: a flipped byte must not decode to garbage."""
    from hpatool.errors import DataError

    source = sorted((real_samples / "kaggle_train_512").glob("*_red.png"))[0]
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "x_red.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
        read_channel(bad)


@pytest.fixture
def copied(cli: Invoke, synth_data: Callable[..., Path], tmp_path: Path) -> Path:
    """A writable copy of a 24-sample synthetic dataset, registered as ``syn``, split in 3,
    and cached."""
    data = tmp_path / "data"
    shutil.copytree(synth_data(24, SIZE, seed=5), data)
    register(cli, data, folds=3)
    res = cli("datasets", "cache", "syn")
    assert res.exit_code == 0, res.output
    assert "Cached 24 of 24 samples of syn (24 decoded now, 0 already cached)" in res.stdout
    return data


def _train(cli: Invoke, tmp_path: Path, name: str, *extra: str) -> object:
    return cli(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
        "--out", tmp_path / "runs", "--name", name, *extra,
    )  # fmt: skip


def test_train_and_predict_say_they_use_the_cache_and_match_the_pngs(
    cli: Invoke, copied: Path, tmp_path: Path
) -> None:
    with_cache = _train(cli, tmp_path, "a")
    assert with_cache.exit_code == 0, with_cache.output  # type: ignore[attr-defined]
    first = with_cache.stdout.splitlines()[0]  # type: ignore[attr-defined]
    assert first.startswith("Run a:") and "read from the decoded cache of syn" in first
    without = _train(cli, tmp_path, "b", "--cache", "off")
    assert "decoded cache" not in without.stdout  # type: ignore[attr-defined]
    # the same weights after the same steps, and the same out-of-fold predictions
    a = torch.load(tmp_path / "runs/a/checkpoint-last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "runs/b/checkpoint-last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "runs/a/oof.csv").read_bytes() == (tmp_path / "runs/b/oof.csv").read_bytes()
    scoring = ("predict", "--run", "a", "--dataset", "syn", "--device", "cpu", "--workers", "0")
    p1 = cli(*scoring, "--out", tmp_path / "s1.csv", "--probs", tmp_path / "p1.csv")
    assert "of syn (read from its decoded cache)" in p1.stdout.splitlines()[0]
    p2 = cli(
        *scoring, "--cache", "off", "--out", tmp_path / "s2.csv", "--probs", tmp_path / "p2.csv"
    )
    assert "decoded cache" not in p2.stdout
    assert (tmp_path / "p1.csv").read_bytes() == (tmp_path / "p2.csv").read_bytes()
    ev = cli("evaluate", "--run", "a", "--dataset", "syn", "--device", "cpu", "--workers", "0")
    assert ev.exit_code == 0 and "read from the decoded cache" in ev.stdout.splitlines()[0]


STALE = "error: the decoded cache of dataset 'syn' is out of date: "


@pytest.fixture
def cached_run(cli: Invoke, trained_run: Workspace) -> Path:
    """A private copy of the session's run 'r1' and its dataset 'syn' (see ``trained_run``: the
    24 samples ``copied`` registers, split in 3), cached; the images' folder."""
    res = cli("datasets", "cache", "syn")
    assert res.exit_code == 0, res.output
    assert "Cached 24 of 24 samples of syn (24 decoded now, 0 already cached)" in res.stdout
    return trained_run.data


@pytest.mark.parametrize("change", ["changed", "added", "removed"])
def test_a_stale_cache_is_refused_by_every_command(
    cli: Invoke, cached_run: Path, tmp_path: Path, change: str
) -> None:
    copied = cached_run  # trained without the cache: run r1
    ids = _ids(copied / "labels.csv")
    if change == "changed":
        path = copied / f"{ids[3]}_green.png"
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 10**9))
        why = f"the files of sample '{ids[3]}' changed after caching"
    elif change == "removed":
        (copied / f"{ids[5]}_blue.png").unlink()
        why = f"sample '{ids[5]}' no longer has all its images (1 such)"
    else:  # a sample registered without images, whose images appear after caching
        (copied / f"{ids[7]}_red.png").rename(tmp_path / "held.png")
        assert cli("datasets", "cache", "syn").exit_code == 0  # cached without it
        (tmp_path / "held.png").rename(copied / f"{ids[7]}_red.png")
        why = f"sample '{ids[7]}' was added after caching"
    expected = f"{STALE}{why}; rebuild it with 'hpatool datasets cache syn' or pass --cache off"
    scoring = ("--run", "r1", "--dataset", "syn", "--device", "cpu", "--workers", "0")
    for args in (
        ("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--out", tmp_path / "runs"),
        ("cv", "--dataset", "syn", "--name", "e", *TRAIN, "--epochs", "1", "--out", tmp_path / "c"),
        ("evaluate", *scoring),
        ("predict", *scoring, "--out", tmp_path / "s.csv"),
    ):
        assert one_line_error(cli(*args), 1) == expected, args
    assert not (tmp_path / "s.csv").exists()
    assert cli("predict", *scoring, "--cache", "off", "--out", tmp_path / "s.csv").exit_code == 0
    rebuilt = cli("datasets", "cache", "syn")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert cli("predict", *scoring, "--out", tmp_path / "t.csv").exit_code == 0


def test_sigkill_during_a_build_then_a_rerun_gives_a_complete_cache(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    data = synth_data(400, 96, seed=2)
    register(cli, data, folds=None)
    proc = start_hpatool(["datasets", "cache", "syn", "--workers", "1"], home)
    index = cache_folder(home, "syn") / "index.sqlite"
    deadline = time.monotonic() + 60
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if index.is_file():
            try:
                with closing(sqlite3.connect(index)) as conn:
                    rows = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            except sqlite3.Error:
                rows = 0
            if rows >= 200:
                break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the build finished before it could be killed (a very fast machine)")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with closing(sqlite3.connect(index)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone() is None
    # not taken for a complete cache: the images are read, with one warning
    from hpatool.data.cache import CacheIncomplete, use_cache
    from hpatool.registry import Registry

    with Registry.open(home) as reg, pytest.warns(CacheIncomplete, match="incomplete"):
        assert use_cache(reg, "syn") is None
    again = json.loads(cli("datasets", "cache", "syn", "--json").stdout)[0]
    assert again["complete"] and again["reused"] >= 200 and again["decoded"] < 400
    assert not list(cache_folder(home, "syn").glob(".tmp-*"))
    with Registry.open(home) as reg:
        view = use_cache(reg, "syn")
    assert view is not None and len(view.sizes) == 400
    for sid in _ids(data / "labels.csv")[::40]:
        path = view.path(sid)
        assert path is not None
        assert np.array_equal(np.asarray(read_cached(path, sid)), read_sample(data, sid))


def test_drop_and_remove_delete_the_cache(cli: Invoke, home: Path, copied: Path) -> None:
    folder = cache_folder(home, "syn")
    assert folder.is_dir()
    dropped = cli("datasets", "cache", "syn", "--drop")
    assert dropped.exit_code == 0 and "Removed the decoded cache of syn" in dropped.stdout
    assert not folder.exists()
    assert "cache" not in json.loads(cli("datasets", "show", "syn", "--json").stdout)
    assert cli("datasets", "cache", "syn").exit_code == 0 and folder.is_dir()
    assert cli("datasets", "remove", "syn").exit_code == 0
    assert not folder.exists()
    unknown = cli("datasets", "cache", "nope")
    assert "nope" in one_line_error(unknown, 2)
