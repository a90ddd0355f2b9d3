"""hpatool.convert: one file -> a typed outcome; the pool helpers; decisions made on kinds."""

from __future__ import annotations

import errno
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hpatool.convert.workers as workers
import hpatool.preprocess as pre
from hpatool.convert.outdir import names_ending, remove_leftovers, write_failures_csv
from hpatool.convert.pool import bounded_map, worker_pool
from hpatool.convert.workers import (
    Outcome,
    OutcomeKind,
    convert_file,
    place_checked_body,
    verify_file,
)
from hpatool.errors import WorkFailed
from hpatool.ids import COLOURS
from hpatool.options import PreprocessConfig


def grey_png(path: Path, size: int = 16) -> Path:
    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(path)
    return path


def test_convert_file_outcomes_and_their_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = grey_png(tmp_path / "a_red.png")
    dst = tmp_path / "out" / "a_red.png"
    assert convert_file(str(src), str(dst), "red", 8, "stain") == Outcome(OutcomeKind.OK)
    with Image.open(dst) as img:
        assert img.size == (8, 8) and img.mode == "L"
    assert verify_file(str(src)).ok

    html = tmp_path / "b_red.jpg"
    html.write_bytes(b"<html>404</html>")
    bad = convert_file(str(html), str(tmp_path / "b.png"), "red", 8, "stain")
    assert bad.kind is OutcomeKind.BAD_IMAGE
    assert bad.message.startswith(f"{html}: cannot decode image (")
    assert bad.message == f"{bad.path}: {bad.reason}" and not bad.reason.startswith(str(html))
    checked = verify_file(str(html))
    assert checked.kind is OutcomeKind.BAD_IMAGE
    assert checked.reason.startswith("does not decode as an image (")
    missing = convert_file(str(tmp_path / "nope_red.png"), str(dst), "red", 8, "stain")
    assert missing.message == f"{tmp_path / 'nope_red.png'}: no such file"

    def full(arr: np.ndarray, path: Path, compress_level: int = 1) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(workers, "save_png", full)
    failed = convert_file(str(src), str(dst), "red", 8, "stain")
    assert failed.kind is OutcomeKind.WRITE_ERROR and failed.path == str(dst)
    assert failed.message == f"cannot write {dst}: No space left on device"


def write_sources(src: Path, ids: list[str]) -> None:
    src.mkdir()
    for sample_id in ids:
        for colour in COLOURS:
            grey_png(src / f"{sample_id}_{colour}.png")


def test_preprocess_decides_on_the_kind_not_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewording a worker's message changes nothing: a write error worded like a bad file
    still stops the run, a bad file worded like a write error is one failed file."""
    write_sources(tmp_path / "src", ["a", "b"])

    def reworded(kind: OutcomeKind, reason: str):  # type: ignore[no-untyped-def]
        def fake(src: str, dst: str, colour: str, size: int, rule: str) -> Outcome:
            if "a_red" in src:
                return Outcome(kind, dst if kind is OutcomeKind.WRITE_ERROR else src, reason)
            return convert_file(src, dst, colour, size, rule)

        return fake

    monkeypatch.setattr(pre, "convert_file", reworded(OutcomeKind.WRITE_ERROR, "the disk said no"))
    with pytest.raises(WorkFailed, match="the disk said no; free some space"):
        pre.preprocess_images(
            tmp_path / "src", tmp_path / "o1", PreprocessConfig(size=8, workers=1)
        )
    monkeypatch.setattr(
        pre, "convert_file", reworded(OutcomeKind.BAD_IMAGE, "cannot write this one: bad pixels")
    )
    summary = pre.preprocess_images(
        tmp_path / "src", tmp_path / "o2", PreprocessConfig(size=8, workers=1)
    )
    assert summary.converted == 7 and summary.failed == 1
    assert summary.failures[0].error.endswith("a_red.png: cannot write this one: bad pixels")


def test_bounded_map_inline_and_in_a_pool() -> None:
    jobs = [(k, (k,)) for k in range(20)]
    assert list(bounded_map(None, lambda x: x * x, jobs, 4)) == [(k, k * k) for k in range(20)]
    in_flight, most = 0, 0
    lock = threading.Lock()
    gate = threading.Event()

    def work(x: int) -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        gate.wait(0.01)
        with lock:
            in_flight -= 1
        return -x

    with ThreadPoolExecutor(8) as pool:
        got = dict(bounded_map(pool, work, jobs, max_in_flight=3))
    assert got == {k: -k for k in range(20)} and most <= 3


def test_worker_pool_is_inline_without_parallel_work() -> None:
    with worker_pool(1, 100) as pool:
        assert pool is None
    with worker_pool(4, 1) as pool:
        assert pool is None
    with worker_pool(2, 10) as pool:
        assert pool is not None
        assert dict(bounded_map(pool, abs, [(k, (-k,)) for k in range(6)], 4)) == {
            k: k for k in range(6)
        }


def test_output_folder_bookkeeping(tmp_path: Path) -> None:
    for name in (".tmp-a_red.png.xyz.png", "a_green.jpg.part", "b_red.jpg.part", "a_red.png"):
        (tmp_path / name).write_bytes(b"x")
    remove_leftovers(tmp_path, {"a"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_red.png", "b_red.jpg.part"]
    assert names_ending(tmp_path, ".png") == {"a_red.png"}
    assert names_ending(tmp_path / "none", ".png") == set()
    csv_path = tmp_path / "failures.csv"
    assert write_failures_csv(csv_path, ["Id", "error"], [["a", "x, y"]]) == csv_path
    assert csv_path.read_text() == 'Id,error\na,"x, y"\n'
    assert write_failures_csv(csv_path, ["Id", "error"], []) is None
    assert not csv_path.exists()


def test_place_checked_body(tmp_path: Path) -> None:
    src = grey_png(tmp_path / "a_red.png")
    part, raw = tmp_path / "a_red.jpg.part", tmp_path / "raw" / "a_red.jpg"
    raw.parent.mkdir()
    assert place_checked_body(src.read_bytes(), str(part), str(raw)).ok
    assert raw.read_bytes() == src.read_bytes() and not part.exists()
    bad = place_checked_body(b"<html>404</html>", str(part), str(raw))
    assert bad.kind is OutcomeKind.BAD_IMAGE and not part.exists()
    assert f"downloaded file {bad.reason}".startswith("downloaded file does not decode as an image")
    nowhere = tmp_path / "gone" / "a_red.jpg.part"
    failed = place_checked_body(src.read_bytes(), str(nowhere), str(raw))
    assert failed.kind is OutcomeKind.WRITE_ERROR
    assert failed.message == f"cannot write {nowhere}: No such file or directory"
