"""``hpatool preprocess`` with hostile files and a busy folder: tiny images, damaged outputs,
names that are not UTF-8, and a second run into the same ``--out`` (issue 9)."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from hpatool.convert.lock import LOCK_FILE, output_lock
from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.support import Invoke, one_line_error


def write_sources(src: Path, ids: list[str], size: int = 64) -> None:
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sample_id in ids:
        for colour in COLOURS:
            arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
            Image.fromarray(arr).save(src / f"{sample_id}_{colour}.png")


def test_a_tiny_source_is_a_failed_file(cli: Invoke, tmp_path: Path, home: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, ["a", "b"])
    Image.new("L", (1, 1), 200).save(src / "a_red.png")
    Image.new("L", (200, 20), 200).save(src / "b_blue.png")  # a strip: its short side counts
    result = cli("preprocess", src, "--out", out, "--size", "32", "--no-register")
    failures = out.resolve() / "failures.csv"
    assert one_line_error(result, 1) == f"error: 2 files could not be converted; see {failures}"
    with open(failures, encoding="utf-8", newline="") as fh:
        rows = [(r["Id"], r["colour"], r["error"]) for r in csv.DictReader(fh)]
    why = "a field has at least on its short side (a placeholder or error image?)"
    assert rows == [
        ("a", "red", f"{src.resolve() / 'a_red.png'}: image is only 1x1 px, under the 32 px {why}"),
        (
            "b",
            "blue",
            f"{src.resolve() / 'b_blue.png'}: image is only 200x20 px, under the 32 px {why}",
        ),
    ]
    assert not (out / "a_red.png").exists() and not (out / "b_blue.png").exists()
    assert len(list(out.glob("*.png"))) == 6
    # with outputs smaller than 64 px, a source need only be as large as the output
    small = cli("preprocess", src, "--out", tmp_path / "o16", "--size", "16", "--no-register")
    assert one_line_error(small, 1).startswith("error: 1 files could not be converted")


def test_damaged_outputs_are_converted_again(cli: Invoke, tmp_path: Path, home: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, ["a", "b"])
    assert cli("preprocess", src, "--out", out, "--size", "32").exit_code == 0
    empty, cut = out / "a_green.png", out / "b_yellow.png"
    empty.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:-12])  # no IEND chunk: cut short
    result = cli("preprocess", src, "--out", out, "--size", "32", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (2, 6, 0)
    for path in (empty, cut):
        with Image.open(path) as img:
            img.load()
            assert img.size == (32, 32)
    verify = cli("datasets", "verify", "out", "--size", "32")
    assert verify.exit_code == 0, verify.output


def test_a_file_name_that_is_not_utf8_is_refused_before_any_work(
    cli: Invoke, tmp_path: Path, home: Path
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, ["a"])
    bad = os.path.join(os.fsencode(src), b"caf\xe9_red.png")
    Image.new("L", (64, 64)).save(bad)
    result = cli("preprocess", src, "--out", out)
    assert one_line_error(result, 1) == (
        f"error: {src.resolve()}: the file name 'caf\\udce9_red.png' is not valid UTF-8 and "
        "cannot be recorded; rename it (e.g. with 'convmv -f latin1 -t utf8') and rerun "
        "(nothing was converted)"
    )
    assert not out.exists()
    with Registry.open(home) as reg:
        assert reg.datasets() == []
    bad_out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xe9"))
    result = cli("preprocess", src / "..", "--out", bad_out)
    assert one_line_error(result, 2) == (
        f"error: the --out folder {bad_out!r} has a name that is not valid UTF-8; rename it "
        "(e.g. with 'convmv -f latin1 -t utf8') and rerun"
    )
    assert not os.path.exists(bad_out)


def test_a_second_run_into_the_same_out_is_refused(cli: Invoke, tmp_path: Path, home: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_sources(src, ["a"])
    out.mkdir()
    (out / "failures.csv").write_text("Id,colour,path,error\n")
    with output_lock(out.resolve(), "preprocess"):
        info = json.loads((out / LOCK_FILE).read_text())
        result = cli("preprocess", src, "--out", out)
        assert one_line_error(result, 1) == (
            f"error: {out.resolve()} is in use by pid {os.getpid()} on {socket.gethostname()} "
            f"(preprocess, started {info['started']}); wait for that run to finish (or stop "
            "it), or give this preprocess another --out"
        )
    assert not list(out.glob("*.png"))
    assert (out / "failures.csv").read_text() == "Id,colour,path,error\n"
    with Registry.open(home) as reg:
        assert reg.datasets() == []
    again = cli("preprocess", src, "--out", out, "--size", "32")
    assert again.exit_code == 0, again.output
    assert len(list(out.glob("*.png"))) == 4
