"""Helpers shared by several test modules (fixtures live in ``conftest.py``): the CLI runner's
type, the one-line error check, the quick training recipe, and the download tests' helpers.
No test module imports another test module; they import this one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import Result

from hpatool.ids import COLOURS

REPO = Path(__file__).resolve().parents[1]

#: ``cli("datasets", "add", ...)``: run ``hpatool ARGS...`` in-process (the ``cli`` fixture).
Invoke = Callable[..., Result]


def one_line_error(result: Result, code: int = 2) -> str:
    """Assert ``result`` failed with ``code`` and one ``error:`` line on stderr; return it."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    text = result.stderr.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    assert not set(text) & set("╭╮╰╯│─"), text  # no boxed usage text
    return text


# ------------------------------------------------------------------------ quick training runs

ARCH = "resnet10t"  # a small timm ResNet: fast on CPU
SIZE = 48
TRAIN = ("--arch", ARCH, "--crop", "32", "--batch-size", "8", "--device", "cpu", "--lr", "3e-3")


def register(cli: Invoke, data: Path, name: str = "syn", folds: int | None = 4) -> None:
    """Register the synthetic dataset in ``data`` as ``name`` and split it into ``folds``."""
    result = cli("datasets", "add", name, "--labels", data / "labels.csv", "--root", data)
    assert result.exit_code == 0, result.output
    if folds:
        result = cli("split", name, "--folds", str(folds))
        assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- downloads

FAST = ["--timeout", "0.5", "--backoff", "0.01", "--workers", "2", "--size", "32"]


def write_labels(path: Path, ids: list[str]) -> Path:
    path.write_text("Id,Target\n" + "".join(f"{i},{k % 25} 25\n" for k, i in enumerate(ids)))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(".part") or p.name.startswith(".tmp-")
    )


def assert_sample_pngs(out: Path, sample_id: str, size: int = 32) -> None:
    for colour in COLOURS:
        path = out / f"{sample_id}_{colour}.png"
        with Image.open(path) as img:
            img.load()
            assert img.mode == "L", path
            assert img.size == (size, size), path


def start_hpatool(args: list[str], home: Path) -> subprocess.Popen[str]:
    """``python -m hpatool ARGS`` in a subprocess with its own registry home."""
    env = {**os.environ, "HPATOOL_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "hpatool", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_pngs(out: Path, n: int, proc: subprocess.Popen[str], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if out.is_dir() and len(list(out.glob("*.png"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"download ended early: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no progress")


# ------------------------------------------------------------------------------ hostile images


def claimed_size_png(path: Path, width: int, height: int) -> Path:
    """A tiny 8-bit greyscale PNG whose header claims ``width`` x ``height`` pixels (a
    "decompression bomb" when that is huge): a few hundred bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # the first rows only: a truncated image
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


# ------------------------------------------------------------------------- stopped training runs


@dataclass
class StoppedRun:
    """A ``train`` subprocess stopped by a signal: its exit code, output, home and runs folder."""

    returncode: int
    stdout: str
    stderr: str
    home: Path
    runs: Path


def stop_training_after_first_epoch(
    synth_data: Callable[..., Path], tmp_path: Path, sig: int, name: str = "t"
) -> StoppedRun:
    """Register a small synthetic dataset in ``tmp_path/home``, start ``hpatool train`` (run
    ``name`` in ``tmp_path/runs``) in a subprocess, and send it ``sig`` once its first
    ``checkpoint-last.pt`` exists."""
    from typer.testing import CliRunner

    from hpatool.cli import app

    home, runs = tmp_path / "home", tmp_path / "runs"
    data = synth_data(24, SIZE, seed=1)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
    ):
        result = CliRunner().invoke(app, ["--home", str(home), *map(str, args)])
        assert result.exit_code == 0, result.output
    last = runs / name / "checkpoint-last.pt"
    args = ["train", "--dataset", "syn", *TRAIN, "--epochs", "1000", "--workers", "0"]
    proc = start_hpatool([*args, "--out", str(runs), "--name", name], home)
    deadline = time.monotonic() + 120
    while not last.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return StoppedRun(proc.returncode, stdout, stderr, home, runs)
