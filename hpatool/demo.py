"""``demo``: the whole chain on synthetic data, in a fresh registry home under one folder.

The library part makes the data and registers it; the CLI's ``demo`` command then runs the
other commands (stats, split, train, evaluate, predict) on it exactly as a user would.
"""

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
TEST = "demo-test"
MIN_SAMPLES = 60


@dataclass(frozen=True)
class DemoData:
    out_dir: Path
    home: Path
    train_dir: Path
    test_dir: Path
    train: str = TRAIN
    test: str = TEST

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"


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


def make_demo_data(
    out_dir: Path,
    samples: int = 400,
    size: int = 64,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> DemoData:
    """Synthesise a training set (``samples``) and a test set (a quarter as many) and register
    them in a fresh registry under ``out_dir``."""
    if samples < MIN_SAMPLES:
        raise UsageError(f"--samples {samples} is too few for a demo; use at least {MIN_SAMPLES}")
    prepare_out_dir(out_dir)
    data = DemoData(
        out_dir=out_dir,
        home=out_dir / "home",
        train_dir=out_dir / "train",
        test_dir=out_dir / "test",
    )
    n_test = max(20, samples // 4)

    def both(done: int, total: int) -> None:
        if progress:
            progress(done, samples + n_test)

    synth_dataset(data.train_dir, samples=samples, size=size, seed=seed, progress=both)
    synth_dataset(
        data.test_dir,
        samples=n_test,
        size=size,
        seed=seed + 1,
        progress=lambda d, t: both(samples + d, t),
    )
    with Registry.open(data.home) as reg:
        add_dataset(
            reg, TRAIN, labels=data.train_dir / "labels.csv", root=data.train_dir, kind="train"
        )
        add_dataset(reg, TEST, labels=data.test_dir / "labels.csv", root=data.test_dir, kind="test")
    return data


def constant_baseline(home: Path, dataset: str, fold: int) -> float:
    """Macro F1 of the best constant predictor on fold ``fold`` of ``dataset``: the bar a
    trained model has to clear."""
    from hpatool.engine.metrics import constant_baseline_macro_f1
    from hpatool.labels import to_multihot

    with Registry.open(home) as reg:
        folds = reg.folds(dataset)
        targets = [s.target for s in reg.samples(dataset) if folds.get(s.id) == fold]
    return constant_baseline_macro_f1(to_multihot(targets))
