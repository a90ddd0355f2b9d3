"""Messages that must not contradict themselves (issue 10, item 5): ``--debug`` anywhere,
crop windows, DataLoader workers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.errors import NotFound
from tests.support import REPO, SIZE, TRAIN, Invoke, one_line_error, register


@pytest.mark.parametrize(
    "args",
    [
        ("--debug", "datasets", "show", "nope"),
        ("datasets", "--debug", "show", "nope"),
        ("datasets", "show", "nope", "--debug"),
    ],
)
def test_debug_works_before_and_after_the_command(cli: Invoke, args: tuple[str, ...]) -> None:
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        cli(*args)  # the fixture does not catch: --debug lets the exception through


def test_debug_after_a_double_dash_is_an_argument(cli: Invoke) -> None:
    msg = one_line_error(cli("datasets", "show", "--", "--debug"))
    assert "'--debug'" in msg and "Traceback" not in msg


def test_debug_after_the_command_prints_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file where the registry folder should be")
    command = [sys.executable, "-m", "hpatool", "datasets", "list", "--home", str(tmp_path / "f")]
    run = subprocess.run(
        [*command, "--debug"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr, run.stderr
    plain = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert plain.returncode == 2 and plain.stderr.startswith("error: ")
    assert "Traceback" not in plain.stderr


def test_whole_image_crop_and_capped_workers(
    cli: Invoke, synth_data: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = synth_data(16)
    register(cli, data, folds=2)
    monkeypatch.setattr("hpatool.data.samples.usable_cpus", lambda: 1)
    res = cli(
        "train", "--dataset", "syn", "--fold", "0", "--epochs", "1", *TRAIN,
        "--workers", "3", "--out", tmp_path / "runs", "--name", "r1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    warned = [line for line in res.stderr.splitlines() if "--workers" in line]
    assert warned == [
        "warning: --workers 3 is more than the 1 CPUs this process can use; "
        "using 1 DataLoader workers"
    ]
    assert "UserWarning" not in res.stderr
    scoring = ("--run", "r1", "--dataset", "syn", "--device", "cpu", "--crops", "4")
    res = cli("predict", *scoring, "--crop-size", str(SIZE), "--out", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    assert f"(1 window of {SIZE}px (the whole image))" in res.stdout
    assert "crops" not in res.stdout.splitlines()[0]
    res = cli("predict", *scoring, "--crop-size", "32", "--out", tmp_path / "t.csv")
    assert f"(mean of 4 windows of 32px covering the {SIZE}x{SIZE} image)" in res.stdout
    res = cli(
        "predict", *scoring, "--crop-size", "32", "--tta", "crops", "--out", tmp_path / "u.csv"
    )
    assert "(mean of 4 crops of 32px)" in res.stdout
    res = cli("evaluate", *scoring, "--crop-size", str(SIZE), "--workers", "2")
    assert res.exit_code == 0, res.output
    assert f"1 window of {SIZE}px (the whole image), thresholds" in res.stdout
    assert res.stderr.count("warning: --workers 2 is more than the 1 CPUs") == 1


def test_windows_text() -> None:
    from hpatool.engine.views import View

    assert View(256, 8, "max", "crops").text((512, 512)) == "max of 8 crops of 256px"
    assert View(512, 8, "max", "crops").text((512, 512)) == "1 window of 512px (the whole image)"
    assert View(256).text((512, 512)) == "mean of 4 windows of 256px covering the 512x512 image"


def test_loader_workers_is_capped_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpatool.data import samples

    monkeypatch.setattr(samples, "usable_cpus", lambda: 2)
    assert samples.loader_workers(0) == 0 and samples.loader_workers(2) == 2
    with pytest.warns(samples.WorkersCapped, match="--workers 8 is more than the 2 CPUs"):
        assert samples.loader_workers(8) == 2
