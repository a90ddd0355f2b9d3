"""Fatal faults of ``download-external`` and ``preprocess``: an unreachable server, disk write
errors, leftovers of killed runs, SIGTERM, and one-line usage errors."""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import Result

from hpatool.download.retry import UNREACHABLE_ATTEMPTS
from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer, fluorescence, stain_rgb
from tests.support import (
    FAST,
    REPO,
    Invoke,
    assert_sample_pngs,
    leftovers,
    start_hpatool,
    wait_for_pngs,
    write_labels,
)


def many_ids(n: int, antibody: int = 5000) -> list[str]:
    return [f"{antibody + k}_1_D1_{k}" for k in range(n)]


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_error_line(stderr: str) -> str:
    """The only line of ``stderr``: ``error: ...``, no traceback, no box."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "╭" not in stderr, stderr
    return lines[0]


def attempts_in(line: str) -> int:
    """N of "the first N attempts failed" in an unreachable-server error."""
    m = re.search(r"the first (\d+) attempts failed", line)
    assert m, line
    return int(m.group(1))


def unwritable(monkeypatch: pytest.MonkeyPatch, when: str = "") -> None:
    """Make ``save_png`` fail with ENOSPC for outputs whose name contains ``when``.

    Patched in ``hpatool.convert.workers`` (where ``convert_file`` looks it up) before any
    pool is made: forked conversion workers inherit it; ``--workers 1`` runs it inline.
    """
    import hpatool.convert.workers as pre

    real = pre.save_png

    def save_png(arr: np.ndarray, path: Path, compress_level: int = 1) -> None:
        if when in Path(path).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(arr, path, compress_level)

    monkeypatch.setattr(pre, "save_png", save_png)


def jpeg_bytes(seed: int, size: int, colour: str = "green") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(stain_rgb(fluorescence(seed, size), colour)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_jpegs(src: Path, ids: list[str], size: int = 64) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for colour in COLOURS:
        data = jpeg_bytes(COLOURS.index(colour), size, colour)
        for sample_id in ids:
            (src / f"{sample_id}_{colour}.jpg").write_bytes(data)


def decodes(path: Path) -> bool:
    with Image.open(path) as img:
        img.load()
        return img.mode == "L"


def download(cli: Invoke, labels: Path, out: Path, base_url: str, *extra: str) -> Result:
    """``hpatool download-external`` of ``labels`` into ``out`` from ``base_url``, fast retries."""
    return cli(
        "download-external", "--labels", labels, "--out", out, "--base-url", base_url, *FAST, *extra
    )


# --------------------------------------------------------------------------- unreachable server


def test_closed_port_stops_early_with_one_line(cli: Invoke, tmp_path: Path, home: Path) -> None:
    ids = many_ids(40)
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    base = f"http://127.0.0.1:{closed_port()}/images"
    started = time.monotonic()
    result = download(cli, labels, out, base, "--concurrency", "8", "--retries", "3")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert "no image could be fetched" in line and "--base-url" in line, line
    # workers still in flight may add an attempt or two before they are cancelled
    assert UNREACHABLE_ATTEMPTS <= attempts_in(line) < UNREACHABLE_ATTEMPTS + 8, line
    assert "connection error" in line and base in line, line
    assert elapsed < 15
    assert leftovers(out) == []
    assert not list(out.glob("*.png"))
    # The run stopped: no failures list, and nothing in the registry (the dataset it had
    # registered, with the wrong URL as its provenance, is gone).
    assert not (out / "failures.csv").exists()
    with Registry.open(home) as reg:
        assert not reg.has_dataset("hpa-v18")
    # Once the server is there, the same command (with the right --base-url) gets everything.
    with HpaServer(image_size=64) as srv:
        # (a longer --timeout: on a loaded machine a 0.5 s timeout may retry a file or two)
        again = download(cli, labels, out, srv.base_url, "--timeout", "10")
        assert again.exit_code == 0, again.output
        assert srv.total_requests == len(ids) * 4
    with Registry.open(home) as reg:
        assert reg.status_counts("hpa-v18") == {"done": len(ids)}
    assert leftovers(out) == []


@pytest.mark.parametrize("concurrency", [8, 32])
def test_html_pages_stop_after_a_bounded_number_of_requests(
    cli: Invoke, server: HpaServer, tmp_path: Path, concurrency: int
) -> None:
    ids = many_ids(40)
    for sample_id in ids:
        for colour in COLOURS:
            server.fault(sample_id, colour, "html!")  # 200 text/html for every image
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    # --timeout 5 (not FAST's 0.5 s): on a loaded machine a request timed out by the client before
    # the server read it counts as an attempt the server never saw.
    result = download(
        cli, labels, out, server.base_url, "--concurrency", str(concurrency), "--retries", "3",
        "--timeout", "5",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert "no image could be fetched" in line and "--base-url" in line, line
    assert "not an image" in line, line
    limit = max(UNREACHABLE_ATTEMPTS, 2 * concurrency)
    assert limit <= attempts_in(line) < limit + concurrency, line
    # All retries of every file would be 40 * 4 * 4 = 640 requests.
    assert limit <= server.total_requests <= limit + concurrency, server.total_requests
    assert leftovers(out) == []
    assert not (out / "failures.csv").exists()


def test_good_images_first_then_failures_are_per_file(
    cli: Invoke, server: HpaServer, tmp_path: Path, home: Path
) -> None:
    # The first 3 samples (12 files, more than --concurrency) arrive; every later file is an
    # HTML page. A worker only takes a failing file after one of its good files finished, so
    # the server has delivered images: normal per-file failures, not "unreachable".
    ids = many_ids(20)
    bad = ids[3:]
    for sample_id in bad:
        for colour in COLOURS:
            server.fault(sample_id, colour, "html!")
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    result = download(cli, labels, out, server.base_url, "--concurrency", "8", "--retries", "2")
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert "no image could be fetched" not in line
    assert line.startswith(f"error: {len(bad)} of {len(ids)} samples failed; see "), line
    # every attempt of every bad file was made: 17 samples * 4 colours * 3 attempts
    assert server.total_requests == 12 + len(bad) * 4 * 3 > UNREACHABLE_ATTEMPTS
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(bad) * 4
    assert all("not an image" in r["error"] and "(after 3 attempts)" in r["error"] for r in rows)
    for sample_id in ids[:3]:
        assert_sample_pngs(out, sample_id)
    assert leftovers(out) == []
    with Registry.open(home) as reg:
        assert reg.status_counts("hpa-v18") == {"done": 3, "failed": len(bad)}


# --------------------------------------------------------------------------- failed samples


def test_failed_samples_give_one_error_line_and_exit_1(
    cli: Invoke, server: HpaServer, tmp_path: Path
) -> None:
    ids = many_ids(5)
    server.fault(ids[1], "red", "403!")
    server.fault(ids[3], "blue", "403!")
    server.fault(ids[3], "yellow", "500!")
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    result = download(cli, labels, out, server.base_url)
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    csv_path = out.resolve() / "failures.csv"
    assert line == (
        f"error: 2 of 5 samples failed; see {csv_path}; rerun the same command to retry them"
    )
    # The summary (with the failed files) is on stdout.
    assert ids[1] in result.stdout and ids[3] in result.stdout
    assert "2 samples failed (3 files)" in result.stdout
    with open(csv_path, encoding="utf-8", newline="") as fh:
        rows = [(r["Id"], r["colour"], r["status"]) for r in csv.DictReader(fh)]
    assert rows == [(ids[1], "red", "403"), (ids[3], "blue", "403"), (ids[3], "yellow", "500")]
    # 403s are not retried within a run, 5xx are
    assert server.count(ids[1], "red") == 1
    assert server.count(ids[3], "yellow") > 1
    assert leftovers(out) == []


# --------------------------------------------------------------------------- disk write errors


@pytest.mark.parametrize("workers", ["1", "2"])
def test_preprocess_write_error_is_fatal(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    ids = [f"s{k:03d}" for k in range(6)]
    write_jpegs(src, ids)
    unwritable(monkeypatch)  # the disk is full from the start
    result = cli("preprocess", src, "--out", out, "--size", "32", "--workers", workers)
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert line.startswith("error: cannot write "), line
    assert "No space left on device" in line and "--out" in line, line
    # Not 24 per-file failures: no failures.csv, no output, no temp file.
    assert not (out / "failures.csv").exists()
    assert not list(out.glob("*.png"))
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_preprocess_write_error_midway_keeps_converted_files(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    ids = [f"s{k:03d}" for k in range(6)]
    write_jpegs(src, ids)
    # an earlier run's failures list must not be rewritten to blame every file
    out.mkdir()
    (out / "failures.csv").write_text("Id,colour,path,error\nold,red,x,y\n")
    unwritable(monkeypatch, when="s003_")
    result = cli("preprocess", src, "--out", out, "--size", "32", "--workers", "1")
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: cannot write {out.resolve() / 's003_blue.png'}: "), line
    # inline, in (id, colour) order: the files before the first failing one are kept
    done = sorted(p.name for p in out.glob("*.png"))
    assert done == sorted(f"{i}_{c}.png" for i in ids[:3] for c in COLOURS)
    assert all(decodes(out / name) for name in done)
    assert (out / "failures.csv").read_text() == "Id,colour,path,error\nold,red,x,y\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # Once the disk has room again, a rerun converts the rest.
    monkeypatch.undo()
    again = cli("preprocess", src, "--out", out, "--size", "32", "--workers", "1", "--json")
    assert again.exit_code == 0, again.output
    assert '"converted": 12' in again.stdout and '"skipped": 12' in again.stdout
    assert not (out / "failures.csv").exists()


@pytest.mark.parametrize("keep_raw", [False, True])
def test_download_write_error_is_fatal(
    cli: Invoke,
    server: HpaServer,
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    keep_raw: bool,
) -> None:
    ids = many_ids(10)
    labels = write_labels(tmp_path / "labels.csv", ids)
    out = tmp_path / "out"
    unwritable(monkeypatch)
    result = download(
        cli,
        labels,
        out,
        server.base_url,
        "--concurrency",
        "4",
        *(["--keep-raw"] if keep_raw else []),
    )
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert line.startswith("error: cannot write "), line
    assert "No space left on device" in line and "rerun to resume" in line, line
    # Stopped at once: not every file fetched (and retried) and listed as failed.
    assert server.total_requests <= 2 * 4, server.total_requests
    assert not (out / "failures.csv").exists()
    assert leftovers(out) == []
    assert not list(out.glob("*.png"))
    with Registry.open(home) as reg:
        assert reg.status_counts("hpa-v18").get("failed", 0) == 0


# --------------------------------------------------------------------------- leftovers


def test_preprocess_removes_leftovers_of_its_own_ids(cli: Invoke, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_jpegs(src, ["10580_1610_C1_1", "kaggle-a"])
    out.mkdir()
    mine = [
        ".tmp-10580_1610_C1_1_red.png.k3j_9abc.png",
        ".tmp-kaggle-a_yellow.png.zz_red01.png",
        "kaggle-a_green.jpg.part",
    ]
    others = [
        ".tmp-elsewhere_red.png.abcdefgh.png",  # an id that is not in the source: another run's
        ".tmp-notes.txt",  # not a leftover of ours at all
    ]
    for name in mine + others:
        (out / name).write_bytes(b"half a png")
    result = cli("preprocess", src, "--out", out, "--size", "32", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp-")) == sorted(
        n for n in others
    )
    assert not (out / "kaggle-a_green.jpg.part").exists()
    assert len([p for p in out.glob("*.png") if not p.name.startswith(".")]) == 8


# --------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers",
    [
        "1",  # inline conversion in the main process
        "2",  # a pool of forked workers
    ],
)
def test_preprocess_sigterm_then_rerun_completes(
    cli: Invoke, tmp_path: Path, home: Path, workers: str
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    ids = [f"t{k:03d}" for k in range(20)]
    write_jpegs(src, ids, size=1024)  # 80 files, ~30 ms each at the original size
    proc = start_hpatool(
        ["preprocess", str(src), "--out", str(out), "--size", "0", "--workers", workers], home
    )
    wait_for_pngs(out, 4, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, (stdout, stderr)
    assert stderr == "error: terminated\n", stderr
    first = [p for p in out.glob("*.png") if not p.name.startswith(".tmp-")]
    # (the 4 waited for may include a temporary file that the stop then removed)
    assert 1 <= len(first) < len(ids) * 4
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert all(decodes(p) for p in first)
    rerun = cli("preprocess", src, "--out", out, "--size", "0", "--workers", "2", "--json")
    assert rerun.exit_code == 0, rerun.output
    assert f'"skipped": {len(first)}' in rerun.stdout
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"{i}_{c}.png" for i in ids for c in COLOURS)
    for name in names:
        with Image.open(out / name) as img:
            img.load()
            assert img.mode == "L" and img.size == (1024, 1024), name
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


# --------------------------------------------------------------------------- usage errors


def test_preprocess_absurd_workers(cli: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_jpegs(src, ["a"])
    result = cli("preprocess", src, "--out", tmp_path / "o", "--workers", "100000")
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert "--workers 100000" in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--concurrency", "abc", "--labels", "x", "--out", "y"], "--concurrency"),
        (["--labels", "x"], "--out"),
        (["--labels", "x", "--out", "y", "--bogus"], "--bogus"),
    ],
)
def test_typer_usage_errors_are_one_line(
    cli: Invoke, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = cli("download-external", *args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert fragment in line and "download-external -h" in line, line
    assert result.stdout == ""


def test_bogus_root_option_is_one_line(cli: Invoke) -> None:
    result = cli("--bogus")
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert "--bogus" in line, line


def test_bogus_root_option_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "HPATOOL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("HPATOOL_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "hpatool", "--bogus"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc
    line = one_error_line(proc.stderr)
    assert "--bogus" in line and proc.stdout == ""


def test_missing_out_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "HPATOOL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    env.pop("HPATOOL_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "hpatool", "download-external", "--concurrency", "abc"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc
    line = one_error_line(proc.stderr)
    assert "--concurrency" in line or "--labels" in line, line
