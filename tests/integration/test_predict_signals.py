"""SIGTERM while ``predict`` or ``evaluate`` scores stops it as Ctrl-C does: one line, exit 143,
no file written (issue 9)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hpatool.cli import app
from hpatool.engine.scoring import score as scoring
from tests.support import SIZE, TRAIN, one_line_error


def run_cli(home: Path, *args: object) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *[str(a) for a in args]])


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_sigterm_while_scoring_is_one_line_and_writes_nothing(
    synth_data: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    home, runs, out = tmp_path / "home", tmp_path / "runs", tmp_path / "out"
    data = synth_data(24, SIZE, seed=1)
    one_step = ("--epochs", "1", "--max-steps", "1", "--workers", "0")
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
        # --eval-crops 1: the run's view is the --crops 1 scored below (no view warning)
        (
            "train",
            "--dataset",
            "syn",
            *TRAIN,
            *one_step,
            "--eval-crops",
            "1",
            "--out",
            runs,
            "--name",
            "r1",
        ),
    ):
        res = run_cli(home, *args)
        assert res.exit_code == 0, res.output
    forward = scoring._forward

    def terminated(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, mid-scoring
        return forward(*args, **kwargs)

    monkeypatch.setattr(scoring, "_forward", terminated)
    given = (
        ("--out", out / "submission.csv") if command == "predict" else ("--plot", out / "f1.png")
    )
    res = run_cli(
        home, command, "--run", "r1", "--dataset", "syn", *given,
        "--crops", "1", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert one_line_error(res, 143) == (
        "error: terminated (SIGTERM) while scoring: no file was written; run the command again"
    )
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
