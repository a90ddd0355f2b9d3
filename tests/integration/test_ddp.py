"""``torchrun --nproc-per-node 2 -m hpatool train``: DDP with gloo on CPU, a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpatool.catalog import add_dataset
from hpatool.data.split import split_dataset
from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.registry import Registry
from hpatool.synth import synth_dataset

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _torchrun(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPATOOL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("HPATOOL_DEBUG", None)
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "hpatool", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_two_process_cpu_ddp(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    synth_dataset(data, samples=40, size=40, seed=1)
    with Registry.open(home) as reg:
        add_dataset(reg, "syn", labels=data / "labels.csv", root=data)
        split_dataset(reg, "syn", folds=4, seed=0)
    out = tmp_path / "runs"
    args = (
        "--dataset",
        "syn",
        "--arch",
        "resnet10t",
        "--crop",
        "32",
        "--batch-size",
        "5",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--out",
        str(out),
        "--name",
        "ddp",
    )
    # 30 training samples: 15 per rank, 3 steps of 5 per epoch; stop after epoch 1
    first = _torchrun(home, tmp_path, *args, "--max-steps", "3")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("Run ddp:") == 1  # only rank 0 talks
    assert first.stdout.count("epoch 1/2") == 1
    run = out / "ddp"
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 10
    assert config["steps_per_epoch"] == 3
    ckpt = load_checkpoint(run / "checkpoint-last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 3 and ckpt["sampler"]["world_size"] == 2
    assert not any(p.name.startswith(".tmp-") for p in run.iterdir())

    resumed = _torchrun(home, tmp_path, "--resume", "--name", "ddp")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with Registry.open(home) as reg:
        (record,) = reg.runs()
    assert record.name == "ddp" and record.status == "done" and record.epochs_done == 2
    assert record.best_f1 is not None
    assert load_checkpoint(run / "checkpoint-last.pt")["step"] == 6
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_two_process_cpu_ddp_cv_trains_two_folds_in_one_process_group(
    home: Path, tmp_path: Path
) -> None:
    """Every rank runs cv's fold loop; the process group outlives the first fold's run."""
    data = tmp_path / "data"
    synth_dataset(data, samples=16, size=40, seed=1)
    with Registry.open(home) as reg:
        add_dataset(reg, "syn", labels=data / "labels.csv", root=data)
        split_dataset(reg, "syn", folds=2, seed=0)
    out = tmp_path / "runs"
    env = {**os.environ, "HPATOOL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("HPATOOL_DEBUG", None)
    cmd = [
        str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "hpatool", "cv",
        "--dataset", "syn", "--name", "dcv", "--arch", "resnet10t", "--crop", "32",
        "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers", "0",
        "--eval-crops", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("fold 1 (2/2, run dcv-f1)") == 1  # only rank 0 talks
    assert "OOF macro F1" in done.stdout and "over 16 of 16 labelled samples" in done.stdout
    with Registry.open(home) as reg:
        runs = reg.experiment_runs("dcv")
    assert [(r.name, r.fold, r.status) for r in runs] == [
        ("dcv-f0", 0, "done"),
        ("dcv-f1", 1, "done"),
    ]
    for r in runs:
        config = json.loads((r.out_dir / "config.json").read_text())
        assert config["world_size"] == 2
        assert (r.out_dir / "oof.csv").read_text().count("\n") == 1 + config["val_samples"]
