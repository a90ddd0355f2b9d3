"""``hpatool train`` on damaged or surprising input: a checkpoint that is not the run's, a run
that died before its first checkpoint, a bad image read in a DataLoader worker, an image smaller
than the crop, the same samples registered twice, and Typer's own range checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from hpatool.data.samples import train_val_items
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, Invoke, one_line_error, register

FAST = (*TRAIN, "--epochs", "1", "--max-steps", "1", "--workers", "0")


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(24, SIZE, seed=1)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_resume_refuses_a_checkpoint_of_another_run(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    for name, arch in (("small", "resnet10t"), ("other", "resnet18")):
        res = cli("train", "--dataset", "syn", *FAST, "--arch", arch, "--out", out, "--name", name)
        assert res.exit_code == 0, res.output
    mine = (out / "small" / "checkpoint-last.pt").read_bytes()
    shutil.copy(out / "other" / "checkpoint-last.pt", out / "small" / "checkpoint-last.pt")
    # No --arch given: the checkpoint itself must be recognised as another run's.
    res = cli("train", "--resume", "--name", "small", "--epochs", "2", "--out", out)
    line = one_line_error(res, 1)
    assert "checkpoint of run 'other', not 'small'" in line
    with Registry.open(home) as reg:
        assert reg.run("small").status != "running"
    (out / "small" / "checkpoint-last.pt").write_bytes(mine)
    res = cli("train", "--resume", "--name", "small", "--epochs", "2", "--out", out)
    assert res.exit_code == 0, res.output


def test_a_run_that_died_before_its_first_checkpoint_can_be_started_again(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    data = _copy(synth_dir, tmp_path / "data")
    register(cli, data)
    with Registry.open(home) as reg:
        first = reg.samples("syn")[5].id  # not the first: that one sizes the crop
    red = data / f"{first}_red.png"
    kept = red.read_bytes()
    red.write_bytes(b"not a png")  # there, but unreadable: training fails on it
    out = tmp_path / "runs"
    args = ("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
            "--oversample", "none", "--out", out)  # fmt: skip
    res = cli(*args, "--name", "r")
    line = one_line_error(res, 1)
    assert f"{first}_red.png" in line
    with Registry.open(home) as reg:
        assert reg.run("r").status == "failed"
    red.write_bytes(kept)
    res = cli(*args, "--name", "r")  # same name: nothing to resume, so it starts afresh
    assert res.exit_code == 0, res.output
    with Registry.open(home) as reg:
        record = reg.run("r")
    assert record.status == "done" and (out / "r" / "checkpoint-last.pt").is_file()


def test_an_error_in_a_dataloader_worker_is_one_clean_line(
    cli: Invoke, tmp_path: Path, synth_dir: Path, home: Path
) -> None:
    import subprocess
    import sys

    data = _copy(synth_dir, tmp_path / "data")
    register(cli, data)  # in-process: only the training needs a process of its own
    env = {**__import__("os").environ, "HPATOOL_HOME": str(home)}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hpatool", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    victim = sorted(data.glob("*_green.png"))[3]
    victim.write_bytes(b"not a png")
    proc = run(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "1",
        "--oversample", "none", "--out", tmp_path / "runs", "--name", "w",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and victim.name in lines[0]
    assert "Traceback" not in lines[0] and "DataLoader worker" not in lines[0]


def test_an_image_smaller_than_the_crop_later_in_the_dataset(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    data = _copy(synth_dir, tmp_path / "data")
    register(cli, data)
    with Registry.open(home) as reg:
        last = reg.samples("syn")[-1].id
    for colour in ("red", "green", "blue", "yellow"):
        path = data / f"{last}_{colour}.png"
        with Image.open(path) as img:
            img.resize((20, 20)).save(path)
    res = cli("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
              "--oversample", "none", "--out", tmp_path / "runs")  # fmt: skip
    line = one_line_error(res, 1)
    assert f"sample {last!r}" in line and "20x20" in line and "crop" in line


def test_the_same_samples_registered_twice_are_trained_once(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir, "syn")
    register(cli, synth_dir, "copy", folds=None)
    with Registry.open(home) as reg:
        parts = train_val_items(reg, ["syn", "copy"], fold=0)
        ids = [it.id for it in parts.train]
        assert len(ids) == len(set(ids))
        assert not set(ids) & {it.id for it in parts.val}
        assert parts.removed_overlap == len(parts.val)
        assert parts.removed_duplicates == 24 - len(parts.val)
        assert parts.per_dataset == {"syn": 24 - len(parts.val), "copy": 0}
    out = tmp_path / "runs"
    res = cli("train", "--dataset", "syn", "--dataset", "copy", *FAST, "--out", out, "--name", "d")
    assert res.exit_code == 0, res.output
    config = json.loads((out / "d" / "config.json").read_text())
    assert config["removed_duplicates"] == 24 - config["val_samples"]
    assert config["train_samples"] == 24 - config["val_samples"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--epochs", "0"), "--epochs"),
        (("--batch-size", "0"), "--batch-size"),
        (("--fold", "-1"), "--fold"),
        (("--epochs", "abc"), "--epochs"),
    ],
)
def test_typer_range_errors_are_one_line(cli: Invoke, args: tuple[str, ...], option: str) -> None:
    res = cli("train", "--dataset", "syn", "--arch", "resnet10t", *args)
    line = one_line_error(res, 2)
    assert option in line and "╭" not in res.stderr and "hpatool train -h" in line


def test_split_range_error_is_one_line(cli: Invoke) -> None:
    line = one_line_error(cli("split", "syn", "--folds", "1"), 2)
    assert "--folds" in line
