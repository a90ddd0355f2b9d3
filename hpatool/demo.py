"""``demo``: the whole chain on synthetic data, in a fresh registry home under one folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hpatool._io import ProgressFn
from hpatool.datasets import add_dataset
from hpatool.errors import UsageError
from hpatool.registry import Registry
from hpatool.synth import synth_dataset

MARKER = ".hpatool-demo"
TRAIN = "demo-train"


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    home: Path
    train_dir: Path
    datasets: list[str]


def prepare_out_dir(out_dir: Path) -> None:
    """Make ``out_dir`` ready: new, empty, or a previous demo's folder (which is cleared)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir} is a file; give --out a folder")
        if (out_dir / MARKER).exists():
            for child in out_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif any(out_dir.iterdir()):
            raise UsageError(
                f"{out_dir} is not empty and not an earlier demo's folder; give --out a new folder"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by hpatool demo; rerunning the demo clears this folder\n")


def run_demo(
    out_dir: Path,
    samples: int = 256,
    size: int = 128,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> DemoResult:
    """Synthesise a training set and register it in a fresh registry under ``out_dir``."""
    if samples < 20:
        raise UsageError(f"--samples {samples} is too few for a demo; use at least 20")
    prepare_out_dir(out_dir)
    home = out_dir / "home"
    train_dir = out_dir / "train"
    synth_dataset(train_dir, samples=samples, size=size, seed=seed, progress=progress)
    with Registry.open(home) as reg:
        add_dataset(reg, TRAIN, labels=train_dir / "labels.csv", root=train_dir, kind="train")
    return DemoResult(out_dir=out_dir, home=home, train_dir=train_dir, datasets=[TRAIN])
