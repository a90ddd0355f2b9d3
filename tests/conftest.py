"""Shared fixtures: a temporary registry home, a CLI runner, the real HPA files in ../shared,
and a trained run made once per session that each test gets a private copy of.

The real files are fixtures that skip the test, with a one-line reason, when ``../shared`` is
not beside the checkout (CI has it and runs them all); a module's own fixtures that need them
are function-scoped, or only the tests that need the files request them, so that a missing
file skips those tests one by one, never a whole module. Helpers that are not fixtures live in
``tests/support.py``.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (the default: -n auto) each worker process, and the hpatool and
    # torchrun processes tests start, uses one CPU thread: the workers already use every core,
    # and torch's own threads would only contend with them. Set before torch is imported.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hpatool.cli import app
from hpatool.synth import synth_dataset
from tests.integration.hpa_server import HpaServer
from tests.support import (
    REPO,
    RUN_CROPS,
    RUN_FOLD,
    SIZE,
    TRAIN,
    Invoke,
    Workspace,
    checkpoint_stamps,
    copy_workspace,
    run_cli,
)

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


@pytest.fixture(scope="session")
def _session_run(
    tmp_path_factory: pytest.TempPathFactory, synth_data: Callable[..., Path]
) -> Workspace:
    """Made once: dataset ``syn`` (24 synthetic 48 px samples of seed 5, 3 folds) and a 2-epoch
    ``ARCH`` run ``r1`` on it (crop 32, validation fold ``RUN_FOLD``, ``--eval-crops
    RUN_CROPS``). Never handed to a test: ``trained_run`` gives each test its own copy."""

    def build(space: Workspace) -> None:
        _session_run_in(space, synth_data)

    return Workspace(_built_once(tmp_path_factory, "session-run", build))


def _built_once(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Workspace], None]
) -> Path:
    """A folder ``name`` made by ``build`` once for the whole test run: under pytest-xdist the
    first worker to ask builds it (holding a file lock) in the folder the workers share, and
    the others wait for it and use it; without xdist, in this process's temporary folder."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = factory.mktemp(name)
        build(Workspace(folder))
        return folder
    from filelock import FileLock

    shared = factory.getbasetemp().parent  # one per test run, shared by its workers
    folder, built = shared / name, shared / f"{name}.built"
    with FileLock(str(shared / f"{name}.lock")):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(Workspace(folder))
            built.touch()
    return folder


def _session_run_in(space: Workspace, synth_data: Callable[..., Path]) -> None:
    shutil.copytree(synth_data(24, SIZE, seed=5), space.data)
    for args in (
        ("datasets", "add", "syn", "--labels", space.data / "labels.csv", "--root", space.data),
        ("split", "syn", "--folds", "3"),
        (
            "train", "--dataset", "syn", *TRAIN, "--epochs", "2", "--fold", RUN_FOLD,
            "--eval-crops", RUN_CROPS, "--workers", "0", "--out", space.runs, "--name", "r1",
        ),
    ):  # fmt: skip
        result = run_cli(space.home, *args)
        assert result.exit_code == 0, (args, result.output)


@pytest.fixture(scope="session")
def _session_full_run(
    tmp_path_factory: pytest.TempPathFactory, synth_data: Callable[..., Path]
) -> Workspace:
    """Made once: dataset ``syn`` (40 synthetic 48 px samples of seed 0, 4 folds) and run
    ``full``, 2 epochs of ``TRAIN`` never stopped: what the stop-and-resume tests compare their
    resumed runs to, bit for bit. Never handed to a test: ``full_run`` gives each its copy."""

    def build(space: Workspace) -> None:
        _session_full_run_in(space, synth_data)

    return Workspace(_built_once(tmp_path_factory, "session-full-run", build))


def _session_full_run_in(space: Workspace, synth_data: Callable[..., Path]) -> None:
    shutil.copytree(synth_data(40, SIZE, seed=0), space.data)
    for args in (
        ("datasets", "add", "syn", "--labels", space.data / "labels.csv", "--root", space.data),
        ("split", "syn", "--folds", "4"),
        (
            "train", "--dataset", "syn", *TRAIN, "--epochs", "2", "--workers", "0",
            "--out", space.runs, "--name", "full",
        ),
    ):  # fmt: skip
        result = run_cli(space.home, *args)
        assert result.exit_code == 0, (args, result.output)


@pytest.fixture
def workspace_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Path]]:
    """``workspace_copy(base)``: a private copy of a workspace made once for a session or a
    module (registry homes, run folders, images: ``copy_workspace``), in a folder of its own
    (not ``tmp_path``). Whatever the test does to it stays in it; the checkpoints are hard
    links, and a test that wrote into one in place (instead of replacing it, as hpatool does)
    fails here."""
    made: list[tuple[Path, dict[Path, tuple[int, int]]]] = []

    def copy(base: Path) -> Path:
        made.append((base, checkpoint_stamps(base)))
        return copy_workspace(base, tmp_path_factory.mktemp("copy") / base.name)

    yield copy
    for base, stamps in made:
        assert checkpoint_stamps(base) == stamps, (
            f"the test wrote into a hard-linked checkpoint of {base}: copy the file first"
        )


@pytest.fixture
def trained_run(
    _session_run: Workspace,
    home: Path,
    workspace_copy: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    """A private copy (``workspace_copy``) of the session's trained workspace (see
    ``_session_run``): its registry ``home`` (exported as HPATOOL_HOME in place of the ``home``
    fixture's, so the ``cli`` fixture uses it), ``runs/r1`` and the images ``data`` of
    ``syn``."""
    space = Workspace(workspace_copy(_session_run.base))
    monkeypatch.setenv("HPATOOL_HOME", str(space.home))
    return space


@pytest.fixture
def full_run(
    _session_full_run: Workspace,
    home: Path,
    workspace_copy: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    """A private copy (``workspace_copy``) of the session's uninterrupted 2-epoch run ``full``
    (``runs/full``), its dataset ``syn`` and registry ``home`` (exported as HPATOOL_HOME, as
    ``trained_run`` does; see ``_session_full_run``)."""
    space = Workspace(workspace_copy(_session_full_run.base))
    monkeypatch.setenv("HPATOOL_HOME", str(space.home))
    return space


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
