"""Helpers shared by several test modules (fixtures live in ``conftest.py``): the CLI runner
(``run_cli``) and its type, the one-line error check, the quick training recipe, private copies
of a trained workspace, and the download tests' helpers. No test module imports another test
module; they import this one."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from hpatool.cli import app
from hpatool.ids import COLOURS

REPO = Path(__file__).resolve().parents[1]

#: ``cli("datasets", "add", ...)``: run ``hpatool ARGS...`` in-process (the ``cli`` fixture).
Invoke = Callable[..., Result]


def run_cli(home: Path, *args: object, input: str | None = None) -> Result:
    """``hpatool --home HOME ARGS...`` in-process (stdout and stderr kept apart): the runner for
    tests with more than one registry home, or a home that is not the ``home`` fixture's. An
    unexpected exception is the result's exit code 1, as in a real process."""
    return CliRunner().invoke(app, ["--home", str(home), *map(str, args)], input=input)


def one_line_error(result: Result, code: int = 2) -> str:
    """Assert ``result`` failed with ``code`` and one ``error:`` line on stderr; return it."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    text = result.stderr.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    assert not set(text) & set("╭╮╰╯│─"), text  # no boxed usage text
    return text


# ------------------------------------------------------------------------ quick training runs

ARCH = "test_resnet"  # timm's own test ResNet (375k weights): fast on CPU, small checkpoints
SIZE = 48
TRAIN = ("--arch", ARCH, "--crop", "32", "--batch-size", "8", "--device", "cpu", "--lr", "3e-3")


#: The ``trained_run`` fixture's run ``r1``: its validation fold (not the default 0, so that a
#: wrong default shows) and the windows of its stored view (``--eval-crops``; the mean of a
#: grid, the defaults). Scoring with ``--crops RUN_CROPS`` gives no view warning.
RUN_FOLD = 1
RUN_CROPS = 2


def register(cli: Invoke, data: Path, name: str = "syn", folds: int | None = 4) -> None:
    """Register the synthetic dataset in ``data`` as ``name`` and split it into ``folds``."""
    result = cli("datasets", "add", name, "--labels", data / "labels.csv", "--root", data)
    assert result.exit_code == 0, result.output
    if folds:
        result = cli("split", name, "--folds", str(folds))
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------ private copies of a trained workspace


@dataclass(frozen=True)
class Workspace:
    """A folder holding a registry ``home/``, a ``runs/`` folder and the images ``data/`` of
    dataset ``syn`` (the ``trained_run`` fixture's: run ``r1``, see ``conftest.py``)."""

    base: Path

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def runs(self) -> Path:
        return self.base / "runs"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def run_dir(self) -> Path:
        return self.runs / "r1"


def _link_or_copy(src: str, dst: str) -> None:
    """Checkpoints (large) are hard-linked: hpatool replaces a file it writes (temporary file
    and rename), never writes into it. Every other file is copied."""
    if src.endswith(".pt"):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def checkpoint_stamps(base: Path) -> dict[Path, tuple[int, int]]:
    """Size and modification time of each checkpoint under ``base``: a test that wrote into a
    hard-linked one in place changes the original's."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(base.rglob("*.pt"))}


def copy_workspace(src: Path, dst: Path) -> Path:
    """A private copy of the folder ``src`` (a workspace: registry homes, run folders, images)
    at ``dst``, with every absolute path under ``src`` rewritten to ``dst``: in the text
    columns of each ``registry.sqlite`` (run folders, dataset roots and label files, stored
    options) and in the runs' ``.json`` files. Checkpoints are hard links (``_link_or_copy``):
    a test that writes into one in place must copy it first."""
    shutil.copytree(src, dst, copy_function=_link_or_copy)
    old, new = f"{src}{os.sep}", f"{dst}{os.sep}"  # a path under src, never a longer name
    for registry in dst.rglob("registry.sqlite"):
        with closing(sqlite3.connect(registry)) as conn:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            for (table,) in conn.execute(query).fetchall():
                for column in conn.execute(f"PRAGMA table_info({table})").fetchall():
                    if column[2].upper() == "TEXT":
                        conn.execute(
                            f"UPDATE {table} SET {column[1]} = replace({column[1]}, ?, ?) "
                            f"WHERE instr({column[1]}, ?) > 0",
                            (old, new, old),
                        )
            conn.commit()
    for doc in dst.rglob("*.json"):
        text = doc.read_text(encoding="utf-8")
        if old in text:
            doc.write_text(text.replace(old, new), encoding="utf-8")
    return dst


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
    home, runs = tmp_path / "home", tmp_path / "runs"
    data = synth_data(24, SIZE, seed=1)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
    ):
        result = run_cli(home, *args)
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
