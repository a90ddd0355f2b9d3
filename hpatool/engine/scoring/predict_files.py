"""The files ``predict`` writes: the submission, the probabilities, and when some images fail,
``<out stem>.partial.csv`` and ``<out stem>.failures.csv``; their writers, and the check of every
one of them (``hpatool.outputs``) before any scoring starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpatool._io import write_csv
from hpatool.engine.config import PredictConfig
from hpatool.engine.runs.run_dir import RUN_FILES, THRESHOLDS_FILE
from hpatool.errors import UsageError
from hpatool.labels import NUM_CLASSES, format_target
from hpatool.outputs import Inputs, check_output
from hpatool.registry import Registry


def partial_path(path: Path) -> Path:
    """``submission.csv`` -> ``submission.partial.csv``."""
    return path.with_name(f"{path.stem}.partial{path.suffix or '.csv'}")


def failures_path_for(path: Path) -> Path:
    """``submission.csv`` -> ``submission.failures.csv``: the images that could not be scored."""
    return path.with_name(f"{path.stem}.failures.csv")


def write_submission(path: Path, ids: Sequence[str], labels: Sequence[Sequence[int]]) -> Path:
    """The Kaggle submission: ``Id,Predicted`` with space-separated class numbers."""
    rows = ([i, format_target(lab)] for i, lab in zip(ids, labels, strict=True))
    return write_csv(path, ["Id", "Predicted"], rows)


def write_probabilities(path: Path, ids: Sequence[str], probs: Sequence[np.ndarray]) -> Path:
    """``Id`` and the 28 class probabilities ``0..27`` at full precision (``repr`` of the
    float64: a file read back gives exactly the probabilities the labels were decided on;
    rounding to 6 decimals flipped decisions at the threshold)."""
    rows = ([i, *[repr(float(v)) for v in p]] for i, p in zip(ids, probs, strict=True))
    return write_csv(path, ["Id", *[str(c) for c in range(NUM_CLASSES)]], rows)


def write_failures(path: Path, failures: dict[str, str]) -> Path:
    """``Id,error``: the images that could not be scored and why."""
    return write_csv(path, ["Id", "error"], failures.items())


def check_predict_outputs(
    reg: Registry, config: PredictConfig, inputs: Inputs
) -> tuple[Path, Path | None]:
    """``--out`` and ``--probs``, and the ``.partial`` / ``.failures`` files beside them,
    checked before any work: writable, and none of them a protected file or an input."""
    own = [*inputs, *model_inputs(reg, config)]
    out = check_output(config.out, "--out", reg, own)
    for derived in (partial_path(out), failures_path_for(out)):
        check_output(derived, "--out", reg, own)
    probs_out = None
    if config.probs is not None:
        probs_out = check_output(config.probs, "--probs", reg, own)
        if probs_out.resolve() == out.resolve():
            raise UsageError(f"--probs {probs_out} is the --out file; give it another name")
        check_output(partial_path(probs_out), "--probs", reg, own)
    return out, probs_out


def model_inputs(reg: Registry, config: PredictConfig) -> list[tuple[str | Path | None, str]]:
    """The model files scoring reads: ``--checkpoint`` and the thresholds beside it, or the
    files of the folders of ``--run`` (each of them) or ``--experiment``'s runs."""
    if config.checkpoint is not None:
        checkpoint = Path(config.checkpoint).expanduser()
        return [
            (checkpoint, "the --checkpoint file"),
            (checkpoint.parent / THRESHOLDS_FILE, "the checkpoint's thresholds file"),
        ]
    from hpatool.engine.runs.oof import OOF_FILE
    from hpatool.engine.scoring.model_source import ensemble_members
    from hpatool.errors import HpaToolError

    try:
        names = [name for name, _ in ensemble_members(reg, config)]
    except HpaToolError:
        names = []  # the scoring says so, with its own message
    files: list[tuple[str | Path | None, str]] = []
    for run in names:
        if reg.has_run(run):
            folder = reg.run(run).out_dir
            files += [(folder / name, f"a file of run {run!r}") for name in (*RUN_FILES, OOF_FILE)]
    return files
