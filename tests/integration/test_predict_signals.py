"""SIGTERM while ``predict`` or ``evaluate`` scores stops it as Ctrl-C does: one line, exit 143,
no file written (issue 9)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from hpatool.engine.scoring import score as scoring
from tests.support import RUN_CROPS, Workspace, one_line_error, run_cli


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_sigterm_while_scoring_is_one_line_and_writes_nothing(
    trained_run: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    home, out = trained_run.home, tmp_path / "out"
    forward = scoring._forward

    def terminated(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, mid-scoring
        return forward(*args, **kwargs)

    monkeypatch.setattr(scoring, "_forward", terminated)
    given = (
        ("--out", out / "submission.csv") if command == "predict" else ("--plot", out / "f1.png")
    )
    res = run_cli(  # --crops: the run's view, so no view warning beside the one line
        home, command, "--run", "r1", "--dataset", "syn", *given,
        "--crops", RUN_CROPS, "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert one_line_error(res, 143) == (
        "error: terminated (SIGTERM) while scoring: no file was written; run the command again"
    )
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
