"""``demo``: the whole chain on synthetic data, in a fresh registry home under one folder.

The library part makes the data, registers it (one unit of work) and plans the steps: the other
commands (stats, split, cv, experiments show, evaluate, predict with the fold ensemble) with
their arguments. The CLI's ``demo`` command runs each step through the app exactly as a user
would type it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hpatool._io import ProgressFn
from hpatool.catalog import add_dataset
from hpatool.errors import UsageError
from hpatool.options import DemoConfig
from hpatool.outputs import check_output_dir, same_folder
from hpatool.registry import Registry
from hpatool.synth import synth_dataset

MARKER = ".hpatool-demo"
TRAIN = "demo-train"
TEST = "demo-test"
EXPERIMENT = "demo-cv"
MIN_SAMPLES = 60


@dataclass(frozen=True)
class DemoData:
    out_dir: Path
    home: Path
    train_dir: Path
    test_dir: Path
    train: str = TRAIN
    test: str = TEST
    experiment: str = EXPERIMENT

    @property
    def run(self) -> str:
        """Fold 0's run: the single-fold figures."""
        return f"{self.experiment}-f0"

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run

    @property
    def submission(self) -> Path:
        return self.out_dir / "submission.csv"

    @property
    def probs(self) -> Path:
        return self.out_dir / "probs.csv"


def prepare_out_dir(out_dir: Path, registry: Registry | None = None) -> None:
    """Make ``out_dir`` ready: new, empty, or a previous demo's folder (which is cleared).

    With the user's ``registry``, a folder holding what it must keep (its home, a registered
    dataset's images or label CSV) is refused before anything is cleared; the demo's own
    registry (``out_dir/home``) is the demo's to clear."""
    own = registry is not None and same_folder(registry.home, out_dir / "home")
    check_output_dir(out_dir, "--out", None if own else registry, clears=True)
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
    samples: int = DemoConfig.samples,
    size: int = DemoConfig.size,
    seed: int = DemoConfig.seed,
    progress: ProgressFn | None = None,
    *,
    registry: Registry | None = None,
) -> DemoData:
    """Synthesise a training set (``samples``) and a test set (a quarter as many) and register
    them in a fresh registry under ``out_dir``. ``registry``, the user's, is only checked (see
    :func:`prepare_out_dir`)."""
    if samples < MIN_SAMPLES:
        raise UsageError(f"--samples {samples} is too few for a demo; use at least {MIN_SAMPLES}")
    prepare_out_dir(out_dir, registry)
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
    with Registry.open(data.home) as reg, reg.transaction():  # both datasets, or neither
        add_dataset(
            reg, TRAIN, labels=data.train_dir / "labels.csv", root=data.train_dir, kind="train"
        )
        add_dataset(reg, TEST, labels=data.test_dir / "labels.csv", root=data.test_dir, kind="test")
    return data


@dataclass(frozen=True)
class Step:
    """One step of the demo: a heading and the ``hpatool`` arguments that do it."""

    title: str
    args: tuple[str, ...]


def plan_steps(
    data: DemoData, *, size: int, epochs: int, arch: str, seed: int, folds: int = 3
) -> list[Step]:
    """The demo's commands after the data is made: statistics, folds, a cross-validated
    experiment (one short run per fold, each scoring its validation fold), its out-of-fold
    summary, fold 0's run evaluated (the mean over the grid, the max beside it), and a
    submission for the test set from the fold ensemble."""
    out = data.out_dir
    cpu = ("--device", "cpu")
    crop = str(size * 3 // 4)  # random crops in training; at scoring, the 2x2 grid covering it
    cv = (
        *("--dataset", data.train, "--name", data.experiment, "--arch", arch),
        *("--epochs", str(epochs), "--batch-size", "16", "--crop", crop, "--lr", "3e-3"),
        *("--workers", "0"),  # the default view: the mean over the grid of windows
        *("--out", str(data.runs_dir), "--seed", str(seed), *cpu),
    )
    stats_plot = ("--plot", str(out / "class-counts.png"), "--pairs", "5")
    plot = ("--plot", str(out / "f1.png"))  # max and mean of the same crops, in one figure
    files = ("--out", str(data.submission), "--probs", str(data.probs))
    return [
        Step("2. label statistics", ("stats", data.train, data.test, *stats_plot)),
        Step(
            "3. near-duplicates (before splitting: copies stay in one fold)",
            ("dedup", data.train, data.test),
        ),
        Step(
            "4. multilabel-stratified folds",
            ("split", data.train, "--folds", str(folds), "--seed", str(seed)),
        ),
        Step(f"5. cross-validate {arch}: one run per fold", ("cv", *cv)),
        Step(
            "6. the experiment: each fold, and all out-of-fold predictions together",
            ("experiments", "show", data.experiment, "--plot", str(out / "oof-f1.png")),
        ),
        Step(
            "7. evaluate fold 0's run on its validation fold, mean (and max) over the grid",
            ("evaluate", "--dataset", data.train, "--run", data.run, *cpu, *plot),
        ),
        Step(
            f"8. predict the test set with the {folds}-fold ensemble",
            ("predict", "--dataset", data.test, "--experiment", data.experiment, *cpu, *files),
        ),
    ]


def oof_figures(home: Path, experiment: str) -> tuple[float | None, float | None, float]:
    """Fold 0's own best validation macro F1 (held out within its fold), and the experiment's
    out-of-fold macro F1, held out (each fold thresholded as tuned on the others; ``None`` with
    one fold) and in sample (thresholds tuned on all of them)."""
    from hpatool.engine.runs.oof import summarize_oof

    with Registry.open(home) as reg:
        runs = reg.experiment_runs(experiment)
        fold0 = next((r.best_f1 for r in runs if r.fold == 0), None)
        summary = summarize_oof(reg, runs)
        return fold0, summary.heldout_macro_f1, summary.macro_f1


def constant_baseline(home: Path, dataset: str, fold: int) -> float:
    """Macro F1 of the best constant predictor on fold ``fold`` of ``dataset``: the bar a
    trained model has to clear."""
    from hpatool.engine.metrics import constant_baseline_macro_f1
    from hpatool.labels import to_multihot

    with Registry.open(home) as reg:
        folds = reg.folds(dataset)
        targets = [s.target for s in reg.samples(dataset) if folds.get(s.id) == fold]
    return constant_baseline_macro_f1(to_multihot(targets))
