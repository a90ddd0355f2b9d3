"""Issue 22, item 1: every command against a matrix of broken inputs and outputs (random bytes,
empty files, folders where files are expected, FIFOs, loops of symbolic links, names that are
not UTF-8, a file where a folder should be) and hand-edited registry values. Whatever the
case, no traceback and no "unexpected": a refusal is one ``error:`` line that names the thing
at fault; an input that is fine after all (a non-UTF-8 output name) is written where asked.

All in one process on one private copy of the session's trained workspace (each case runs in
a folder of its own and a refused case changes nothing); each command is given 60 seconds, so
a FIFO that something opens for reading fails the case instead of hanging the suite."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.support import TRAIN, Workspace, copy_workspace, run_cli


@pytest.fixture(scope="module")
def space(_session_run: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A private copy of the session's workspace (dataset ``syn``, run ``r1``) with the run's
    probabilities of ``syn`` in ``probs.csv``."""
    ws = Workspace(copy_workspace(_session_run.base, tmp_path_factory.mktemp("matrix") / "ws"))
    result = run_cli(
        ws.home, "predict", "--run", "r1", "--dataset", "syn", "--workers", "0",
        "--out", ws.base / "sub.csv", "--probs", ws.base / "probs.csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return ws


def hostile(kind: str, folder: Path, suffix: str = ".csv") -> Path:
    """A path of ``kind`` in ``folder`` (made for the case), named ``x`` + ``suffix``."""
    folder.mkdir(parents=True)
    path = folder / f"x{suffix}"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink(folder / f"y{suffix}", path)
        os.symlink(path, folder / f"y{suffix}")
    elif kind in ("non-utf8", "non-utf8-name"):
        path = folder / os.fsdecode(b"\xff\xfe" + suffix.encode())
        if kind == "non-utf8-name":
            return path
        path.write_bytes(b"Id,Target\nabc,1\n")
    elif kind == "below-a-file":
        (folder / "f").write_text("a file")
        path = folder / "f" / f"x{suffix}"
    else:  # "missing"
        assert kind == "missing"
    return path


def _alarm(*_: Any) -> None:
    raise TimeoutError("the command did not return in 60 s (a FIFO opened for reading?)")


def own_home(space: Workspace, folder: Path) -> Path:
    """A copy of ``space``'s registry home for one case (a case a command accepts registers
    what it made there; the run folders and images stay shared, and nothing writes them)."""
    home = folder / "home"
    shutil.copytree(space.home, home)
    return home


def run(home: Path, args: tuple[Any, ...]) -> Result:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        return run_cli(home, *args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def names_it(line: str, path: Path) -> bool:
    """Whether ``line`` names ``path`` (a non-UTF-8 name shown escaped)."""
    escaped = ("\\udcff\\udcfe", "\\xff\\xfe")
    return path.name in line or "/f" in line or any(e in line for e in escaped) or str(path) in line


def assert_clean(result: Result, path: Path, may_succeed: bool = False) -> None:
    """No traceback, no "unexpected"; a failure is one ``error:`` line naming ``path``."""
    err = result.stderr.strip()
    assert result.exception is None or isinstance(result.exception, SystemExit), err
    assert "Traceback" not in err and "unexpected" not in err, err
    if result.exit_code == 0:
        assert may_succeed, f"accepted a broken input: {result.stdout}{err}"
        return
    assert result.exit_code in (1, 2), (result.exit_code, err)
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names_it(lines[0], path), lines[0]


# ---------------------------------------------------------------------- files a command reads

INPUT_KINDS = ("random", "empty", "folder", "fifo", "loop", "non-utf8", "missing")

Args = Callable[[Workspace, Path], tuple[Any, ...]]
QUICK = ("--workers", "0")
SCORE = ("--run", "r1", "--dataset", "syn", *QUICK)
TRAIN_1 = ("--dataset", "syn", *TRAIN, "--epochs", "1", "--max-steps", "1", *QUICK)

#: slot -> (the command, with the hostile path F in one place; which kinds it may accept)
INPUTS: dict[str, tuple[Args, tuple[str, ...]]] = {
    "datasets add --labels": (
        lambda w, f: ("datasets", "add", "x", "--labels", f, "--root", w.data),
        (),
    ),
    # a root not there yet is allowed (the images come later); an empty folder too
    "datasets add --root": (
        lambda w, f: ("datasets", "add", "x", "--labels", w.data / "labels.csv", "--root", f),
        ("folder", "missing"),
    ),
    "datasets set-root": (lambda w, f: ("datasets", "set-root", "syn", f), ("folder",)),
    "download-external --labels": (
        lambda w, f: ("download-external", "--labels", f, "--out", w.base / "dl"),
        (),
    ),
    "preprocess SRC_DIR": (
        lambda w, f: ("preprocess", f, "--out", w.base / "pp", "--workers", "1"),
        (),
    ),
    "train --config": (
        lambda w, f: ("train", "--config", f, *TRAIN_1, "--out", f"{f}.runs", "--name", "t"),
        ("empty",),  # an empty TOML file sets nothing
    ),
    "train --pretrained": (
        lambda w, f: ("train", "--pretrained", f, *TRAIN_1, "--out", f"{f}.runs", "--name", "t"),
        (),
    ),
    "evaluate --checkpoint": (
        lambda w, f: ("evaluate", "--checkpoint", f, "--dataset", "syn", *QUICK),
        (),
    ),
    "evaluate --threshold": (lambda w, f: ("evaluate", *SCORE, "--threshold", f), ()),
    "predict --threshold": (
        lambda w, f: ("predict", *SCORE, "--threshold", f, "--out", w.base / "o.csv"),
        (),
    ),
    "predict --threshold prior=": (
        lambda w, f: ("predict", *SCORE, "--threshold", f"prior={f}", "--out", w.base / "o.csv"),
        (),
    ),
    "blend PROBS": (
        lambda w, f: ("blend", w.base / "probs.csv", f, "--threshold", "0.5", "--out", f"{f}.o"),
        (),
    ),
    "blend --oof": (
        lambda w, f: ("blend", w.base / "probs.csv", "--oof", f, "--out", w.base / "o.csv"),
        (),
    ),
    "blend --threshold": (
        lambda w, f: ("blend", w.base / "probs.csv", "--threshold", f, "--out", w.base / "o.csv"),
        (),
    ),
    "runs import": (lambda w, f: ("runs", "import", f), ()),
    "--home": (lambda w, f: ("--home", f, "datasets", "list"), ("folder", "missing")),
}


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("slot", list(INPUTS))
def test_a_broken_input_is_one_line_naming_it(
    space: Workspace, tmp_path: Path, slot: str, kind: str
) -> None:
    args, accepted = INPUTS[slot]
    path = hostile(kind, tmp_path / "case")
    result = run(own_home(space, tmp_path), args(space, path))
    assert_clean(result, path, may_succeed=kind in accepted)


# --------------------------------------------------------------------- files a command writes

OUTPUT_KINDS = ("folder", "loop", "below-a-file", "non-utf8-name")

OUTPUTS: dict[str, Args] = {
    "datasets export --out": lambda w, f: ("datasets", "export", "syn", "--out", f),
    "datasets verify --failures": lambda w, f: ("datasets", "verify", "syn", "--failures", f),
    "stats --plot": lambda w, f: ("stats", "syn", "--plot", f),
    "dedup --out": lambda w, f: ("dedup", "syn", "--out", f, "--workers", "1"),
    "predict --out": lambda w, f: ("predict", *SCORE, "--out", f),
    "predict --probs": lambda w, f: ("predict", *SCORE, "--out", w.base / "o.csv", "--probs", f),
    "evaluate --plot": lambda w, f: ("evaluate", *SCORE, "--plot", f),
    "runs export --out": lambda w, f: ("runs", "export", "r1", "--format", "onnx", "--out", f),
    "blend --out": lambda w, f: ("blend", w.base / "probs.csv", "--threshold", "0.5", "--out", f),
    "synth OUT_DIR": lambda w, f: ("synth", f, "--samples", "2", "--size", "32"),
    "train --out": lambda w, f: ("train", *TRAIN_1, "--out", f, "--name", "t"),
}  # fmt: skip


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
@pytest.mark.parametrize("slot", list(OUTPUTS))
def test_a_broken_output_path_is_one_line_naming_it(
    space: Workspace, tmp_path: Path, slot: str, kind: str
) -> None:
    """A folder (or a loop, or a path below a file) where a file is written is refused; a name
    that is not UTF-8 is written as given, and the command's own lines show it escaped."""
    path = hostile(kind, tmp_path / "case", ".png" if "--plot" in slot else ".csv")
    is_folder_output = slot in ("synth OUT_DIR", "train --out")
    result = run(own_home(space, tmp_path), OUTPUTS[slot](space, path))
    ok = kind == "non-utf8-name" or (kind == "folder" and is_folder_output)
    assert_clean(result, path, may_succeed=ok)
    if result.exit_code == 0 and not is_folder_output:
        assert path.is_file() and path.stat().st_size > 0, sorted(path.parent.iterdir())
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


# -------------------------------------------------------------- hand-edited registry values

EDITS = {
    "an id with path separators": "UPDATE samples SET sample_id = '../../etc/x' WHERE idx = 0",
    "a root that is not UTF-8": "UPDATE datasets SET root = CAST(X'2F746D702FFF' AS TEXT)",
    "a kind outside the check": (
        "PRAGMA ignore_check_constraints = 1; UPDATE datasets SET kind = 'weird'"
    ),
    "folds that are text": "UPDATE splits SET folds = 'many'",
    "a fold that is text": (
        "UPDATE folds SET fold = 'x' WHERE sample_id = (SELECT sample_id FROM folds LIMIT 1)"
    ),
    "a run config that is not JSON": "UPDATE runs SET config = '{not json'",
    "a run status nobody wrote": "UPDATE runs SET status = 'zombie'",
    "a run fold that is text": "UPDATE runs SET fold = 'one'",
    "a best F1 that is text": "UPDATE runs SET best_f1 = 'great'",
    "a hash that is text": (
        "INSERT OR REPLACE INTO sample_hashes SELECT dataset_id, sample_id, 'zz', 'x', 'a', 'b'"
        " FROM samples LIMIT 1"
    ),
}

READERS: dict[str, tuple[str, ...]] = {
    "datasets list": ("datasets", "list"),
    "datasets show": ("datasets", "show", "syn", "--samples"),
    "stats": ("stats", "syn"),
    "dedup": ("dedup", "syn", "--workers", "1"),
    "runs list": ("runs", "list"),
    "runs show": ("runs", "show", "r1"),
    "evaluate": ("evaluate", *SCORE),
}


@pytest.fixture
def edited(space: Workspace, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``edited(sql)``: the home of a copy of ``space``'s registry (the runs and images stay
    shared: nothing here writes them) with ``sql`` applied."""

    def make(sql: str) -> Path:
        home = own_home(space, tmp_path)
        with closing(sqlite3.connect(home / "registry.sqlite")) as conn:
            conn.executescript(sql)
            conn.commit()
        return home

    yield make


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("edit", list(EDITS))
def test_a_hand_edited_registry_value_is_named_not_unexpected(
    edited: Callable[[str], Path], edit: str, reader: str
) -> None:
    """A reader of the damaged row names the registry, table, row and column (or goes on
    without the row where it is a cache: a damaged hash is hashed again); never a traceback
    or an "unexpected" line, and a listing says the row is damaged instead of hiding it."""
    home = edited(EDITS[edit])
    result = run(home, READERS[reader])
    err = result.stderr.strip()
    assert result.exception is None or isinstance(result.exception, SystemExit), err
    assert "Traceback" not in err and "unexpected" not in err, err
    if result.exit_code != 0:
        lines = [line for line in err.splitlines() if not line.startswith(("warning:", "note:"))]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        line = lines[0]
        assert "registry" in line or "\\udcff" in line or "../../etc/x" in line, line
    elif reader == "runs list" and edit.startswith("a run"):
        assert "warning: registry" in err and "table runs" in err, err
