"""Shared fixtures: a temporary registry home, a CLI runner, the real HPA files in ../shared.

The real files are fixtures that skip the test, with a one-line reason, when ``../shared`` is
not beside the checkout (CI has it and runs them all). Helpers that are not fixtures live in
``tests/support.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hpatool.cli import app
from hpatool.synth import synth_dataset
from tests.integration.hpa_server import HpaServer
from tests.support import REPO, SIZE, Invoke

SHARED_HPA = REPO.parent / "shared" / "data" / "hpa"


def _shared(*parts: str) -> Path:
    path = SHARED_HPA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the real HPA files: {path} is absent (CI has ../shared)")
    return path


@pytest.fixture(scope="session")
def shared_hpa() -> Path:
    """``../shared/data/hpa``, the real competition files."""
    return _shared()


@pytest.fixture(scope="session")
def train_csv() -> Path:
    return _shared("train.csv")


@pytest.fixture(scope="session")
def submission_csv() -> Path:
    return _shared("sample_submission.csv")


@pytest.fixture(scope="session")
def hpav18_csv() -> Path:
    return _shared("HPAv18RBGY_wodpl.csv")


@pytest.fixture(scope="session")
def portal_field() -> Path:
    """One real 16-bit HPA field image."""
    return _shared("portal_field", "1000_A12_2_green.png")


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """``real/``: 60 real Kaggle train samples, HPAv18 JPEGs, full-resolution fields."""
    return _shared("real")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``synth_data(samples, size=SIZE, seed=0)``: a synthetic dataset folder (images and
    labels.csv), made once per session for each set of arguments. Tests must not modify it:
    copy it first."""
    made: dict[tuple[int, int, int], Path] = {}

    def make(samples: int, size: int = SIZE, seed: int = 0) -> Path:
        key = (samples, size, seed)
        if key not in made:
            out = tmp_path_factory.mktemp("synth") / "data"
            synth_dataset(out, samples=samples, size=size, seed=seed)
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def server() -> Iterator[HpaServer]:
    """A fake HPA image server on 127.0.0.1 (see ``tests/integration/hpa_server.py``)."""
    with HpaServer(image_size=64) as srv:
        yield srv


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh registry home, also exported as HPATOOL_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("HPATOOL_HOME", str(path))
    monkeypatch.delenv("HPATOOL_DEBUG", raising=False)
    return path


@pytest.fixture
def cli(home: Path) -> Invoke:
    """Run ``hpatool ARGS...`` in-process; stdout and stderr are kept apart."""
    runner = CliRunner()

    def invoke(*args: str | Path, input: str | None = None) -> Result:
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(autouse=True)
def _registries_are_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every SQLite connection a test opens in this process (a ``Registry`` included) is closed
    by the end of the test."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def tracking_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracking_connect)
    yield
    left = [c for c in opened if _is_open(c)]
    for conn in left:
        conn.close()
    assert not left, f"{len(left)} registry connection(s) left open by the test"


def _is_open(conn: sqlite3.Connection) -> bool:
    try:
        conn.total_changes  # noqa: B018 - raises ProgrammingError once closed
    except sqlite3.ProgrammingError:
        return False
    return True
