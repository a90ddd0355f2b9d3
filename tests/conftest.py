"""Shared fixtures: a temporary registry home, a CLI runner, the real HPA files in ../shared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hpatool.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED_HPA = REPO.parent / "shared" / "data" / "hpa"
TRAIN_CSV = SHARED_HPA / "train.csv"
SUBMISSION_CSV = SHARED_HPA / "sample_submission.csv"
HPAV18_CSV = SHARED_HPA / "HPAv18RBGY_wodpl.csv"
PORTAL_FIELD = SHARED_HPA / "portal_field" / "1000_A12_2_green.png"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh registry home, also exported as HPATOOL_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("HPATOOL_HOME", str(path))
    monkeypatch.delenv("HPATOOL_DEBUG", raising=False)
    return path


Invoke = Callable[..., Result]


@pytest.fixture
def cli(home: Path) -> Invoke:
    """Run ``hpatool ARGS...`` in-process; stdout and stderr are kept apart."""
    runner = CliRunner()

    def invoke(*args: str | Path, input: str | None = None) -> Result:
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke
