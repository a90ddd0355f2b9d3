"""Issue 22, item 6: the commands of issues 14-16 (the decoded cache, ``runs average``,
``blend``, threshold files, ``runs export``) under attack. Hostile input files (other Ids, NaN,
missing columns, out-of-range values, duplicates, binary content), checkpoints of another
architecture, outputs aimed at their own inputs, the registry or a run's files, a full disk:
each is one exact line naming the file (and row or class) with its exit code, and nothing is
half-written or registered."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support import ARCH, TRAIN, Invoke, Workspace, copy_workspace, one_line_error, run_cli

QUICK = ("--workers", "0")


@pytest.fixture(scope="module")
def _averaged(_session_run: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Made once for the module: the session's workspace plus run ``k2`` (2 epochs, both kept:
    ``--keep-checkpoints 2``) and ``probs.csv``, run ``r1``'s probabilities of ``syn``."""
    ws = Workspace(copy_workspace(_session_run.base, tmp_path_factory.mktemp("hostile") / "ws"))
    for args in (
        ("train", "--dataset", "syn", *TRAIN, "--epochs", "2", "--keep-checkpoints", "2",
         *QUICK, "--out", ws.runs, "--name", "k2"),
        ("predict", "--run", "r1", "--dataset", "syn", *QUICK, "--out", ws.base / "sub.csv",
         "--probs", ws.base / "probs.csv"),
    ):  # fmt: skip
        result = run_cli(ws.home, *args)
        assert result.exit_code == 0, (args, result.output)
    return ws


@pytest.fixture
def space(
    _averaged: Workspace,
    workspace_copy: Callable[[Path], Path],
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    """A private copy of ``_averaged`` (its registry is the ``cli`` fixture's)."""
    ws = Workspace(workspace_copy(_averaged.base))
    monkeypatch.setenv("HPATOOL_HOME", str(ws.home))
    return ws


def runs_of(ws: Workspace) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(ws.home / "registry.sqlite")) as conn:
        return sorted(conn.execute("SELECT name, status FROM runs").fetchall())


def no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")], folder


# ----------------------------------------------------------------------- threshold files

NOT_IN_01 = "is not a number in [0, 1]"
THRESHOLD_FILES = {
    "NaN": ("class,threshold\n0,nan\n", f"line 2: threshold 'nan' of class '0' {NOT_IN_01}"),
    "out of range": (
        "class,threshold\n0,1.5\n",
        f"line 2: threshold '1.5' of class '0' {NOT_IN_01}",
    ),
    "negative": ("class,threshold\n3,-0.2\n", f"line 2: threshold '-0.2' of class '3' {NOT_IN_01}"),
    "text": ("class,threshold\n0,abc\n", f"line 2: threshold 'abc' of class '0' {NOT_IN_01}"),
    "a class twice": ("class,threshold\n0,0.3\n0,0.4\n", "line 3: class '0' is given twice"),
    "an unknown class": (
        "class,threshold\n28,0.3\n",
        "line 2: class '28' is not 0..27 nor a class name such as 'Lysosomes'",
    ),
    "a missing column": ("class\n0\n", ": needs columns class and threshold (has class)"),
    "no rows": ("class,threshold\n", ": names no class; give one row per class: class,threshold"),
    "binary": (
        b"\x00\x01\x02PK\x03\x04",
        ": needs columns class and threshold (has \\x00\\x01\\x02pk\\x03\\x04)",
    ),
}


@pytest.mark.parametrize("command", ["predict", "blend"])
@pytest.mark.parametrize("case", list(THRESHOLD_FILES))
def test_a_hostile_threshold_file_is_one_line_naming_row_and_class(
    cli: Invoke, space: Workspace, command: str, case: str
) -> None:
    content, said = THRESHOLD_FILES[case]
    path = space.base / "thr.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = space.base / "o.csv"
    if command == "predict":
        args: tuple[Any, ...] = ("predict", "--run", "r1", "--dataset", "syn", *QUICK)
    else:
        args = ("blend", space.base / "probs.csv")
    line = one_line_error(cli(*args, "--threshold", path, "--out", out), 1)
    assert line == f"error: {path}{'' if said.startswith(':') else ', '}{said}"
    assert not out.exists()
    # the same rows as prior=FILE.csv shares: the same words, with "share"
    shares = space.base / "shares.csv"
    shares.write_bytes(path.read_bytes().replace(b"threshold", b"share"))
    line = one_line_error(cli(*args, "--threshold", f"prior={shares}", "--out", out), 1)
    assert line == f"error: {shares}{'' if said.startswith(':') else ', '}" + said.replace(
        "threshold", "share"
    )
    assert not out.exists()


# ------------------------------------------------------------------- probability files


def _edit(lines: list[str], case: str) -> list[str]:
    if case == "other Ids":
        return [lines[0]] + ["zz" + line for line in lines[1:]]
    if case == "NaN":
        return [lines[0], lines[1].rsplit(",", 1)[0] + ",nan", *lines[2:]]
    if case == "out of range":
        return [lines[0], lines[1].rsplit(",", 1)[0] + ",1.7", *lines[2:]]
    if case == "a missing column":
        return [line.rsplit(",", 1)[0] for line in lines]
    if case == "an Id twice":
        return [*lines, lines[1]]
    assert case == "a short row"
    return [lines[0], lines[1].split(",")[0] + ",0.5", *lines[2:]]


PROBABILITY_FILES = {
    "other Ids": (
        "its Ids differ from {good}'s (24 missing, 24 extra; the first: '{first}'); blend "
        "files of the same dataset"
    ),
    "NaN": "line 2, column 27: 'nan' is not a probability (0 to 1)",
    "out of range": "line 2, column 27: '1.7' is not a probability (0 to 1)",
    "a missing column": (
        "line 1: not a probability file (the header must be Id,0,1,...,27); it is written by "
        "'hpatool predict --probs'"
    ),
    "an Id twice": "line 26: id '{first}' appears twice",
    "a short row": "line 2: 2 columns, expected 29",
}


@pytest.mark.parametrize("case", list(PROBABILITY_FILES))
def test_a_hostile_probability_file_is_one_line_naming_it(
    cli: Invoke, space: Workspace, case: str
) -> None:
    good = space.base / "probs.csv"
    lines = good.read_text().splitlines()
    first = lines[1].split(",")[0]
    bad = space.base / "bad.csv"
    bad.write_text("\n".join(_edit(lines, case)) + "\n")
    out = space.base / "o.csv"
    line = one_line_error(cli("blend", good, bad, "--threshold", "0.5", "--out", out), 1)
    said = PROBABILITY_FILES[case].format(good=good, first=first)
    assert line == f"error: {bad}{'' if said.startswith('its') else ','} {said}".replace(
        f"{bad} its", f"{bad}: its"
    )
    assert not out.exists()


# ---------------------------------------------------------- outputs aimed at what they read


@pytest.mark.parametrize(
    "target", ["runs/r1/checkpoint-best.pt", "runs/r1/oof.csv", "runs/k2/config.json"]
)
@pytest.mark.parametrize("command", ["blend", "datasets export", "runs export"])
def test_no_output_writes_over_a_file_of_a_registered_run(
    cli: Invoke, space: Workspace, command: str, target: str
) -> None:
    path = space.base / target
    before = path.read_bytes()
    args: tuple[Any, ...] = {
        "blend": ("blend", space.base / "probs.csv", "--threshold", "0.5", "--out", path),
        "datasets export": ("datasets", "export", "syn", "--out", path),
        "runs export": ("runs", "export", "k2", "--format", "onnx", "--out", path),
    }[command]
    line = one_line_error(cli(*args), 2)
    run = target.split("/")[1]
    if command == "runs export" and run == "k2":  # its own files: the run's own words
        assert (
            line
            == f"error: --out {path} is the run's {path.name}; write the output to another file"
        )
    else:
        assert line == (
            f"error: --out {path} is a file of run {run!r} (its folder {path.parent}); write "
            "the output to another file"
        )
    assert path.read_bytes() == before
    no_leftovers(space.base)


def test_blend_out_aimed_at_its_input_or_the_registry_is_refused(
    cli: Invoke, space: Workspace
) -> None:
    probs = space.base / "probs.csv"
    before = probs.read_bytes()
    line = one_line_error(cli("blend", probs, "--threshold", "0.5", "--out", probs), 2)
    assert (
        line
        == f"error: --out {probs} is an input probability file; write the output to another file"
    )
    registry = space.home / "registry.sqlite"
    line = one_line_error(cli("blend", probs, "--threshold", "0.5", "--out", registry), 2)
    assert line == (
        f"error: --out {registry} is hpatool's registry ({registry}); write the output to "
        "another file"
    )
    assert probs.read_bytes() == before


# --------------------------------------------------------- checkpoints of another model


def _other_arch(path: Path) -> None:
    """Replace ``path``'s weights (keeping its model_spec, ``ARCH``'s) by resnet18's."""
    import timm

    doc = torch.load(path, weights_only=True)
    doc["model"] = timm.create_model("resnet18", num_classes=28, in_chans=4).state_dict()
    path.unlink()  # a hard link to the session's file: replace it, never write into it
    torch.save(doc, path)


def test_a_checkpoint_of_another_architecture_is_named_by_export_and_predict(
    cli: Invoke, space: Workspace
) -> None:
    best = space.runs / "r1" / "checkpoint-best.pt"
    _other_arch(best)
    out = space.base / "m.onnx"
    import timm

    ours = timm.create_model(ARCH, in_chans=4, num_classes=28).state_dict()
    theirs = torch.load(best, weights_only=True)["model"]
    missing = [k for k in ours if k not in theirs]
    said = (
        f"error: {best}: its weights are not those of {ARCH} (4 channels, 28 classes), the "
        f"model its model_spec names: {len(missing)} weights missing (the first: "
        f"{missing[0]!r}); "
    )
    line = one_line_error(cli("runs", "export", "r1", "--format", "onnx", "--out", out), 1)
    assert line.startswith(said) and line.endswith(
        "pass a checkpoint written by 'hpatool train' for this model"
    ), line
    assert not out.exists() and not out.with_suffix(".onnx.json").exists()
    sub = space.base / "sub2.csv"
    line = one_line_error(
        cli("predict", "--run", "r1", "--dataset", "syn", *QUICK, "--out", sub), 1
    )
    assert line.startswith(said), line
    assert not sub.exists()
    no_leftovers(space.base)


# ------------------------------------------------------------------------- runs average


def _epochs(ws: Workspace) -> list[Path]:
    return sorted((ws.runs / "k2").glob("checkpoint-epoch-*.pt"))


@pytest.mark.parametrize("damage", ["another architecture", "random bytes", "truncated"])
def test_runs_average_of_a_damaged_epoch_registers_nothing(
    cli: Invoke, space: Workspace, damage: str
) -> None:
    first, second = _epochs(space)
    if damage == "another architecture":
        _other_arch(first)
        said = (
            f"error: {first}: its weights do not have the shapes of {second.name}'s; average "
            "the checkpoints of one run"
        )
    else:
        data = second.read_bytes()
        second.unlink()
        second.write_bytes(os.urandom(5000) if damage == "random bytes" else data[:1000])
        reason = (
            "not a plain tensor file"
            if damage == "random bytes"
            else "a truncated or damaged PyTorch file (its zip archive cannot be read)"
        )
        said = f"error: {second}: not a readable checkpoint: {reason}"
    before = runs_of(space)
    result = cli("runs", "average", "k2", "--last", "2", "--name", "k2-swa", *QUICK)
    line = one_line_error(result, 1)
    assert line.startswith(said), line
    assert runs_of(space) == before
    assert not (space.runs / "k2-swa").exists()
    no_leftovers(space.runs)


# ------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "another shape", "gone"])
def test_a_damaged_cache_file_is_refused_before_a_run_is_registered_and_rebuilt(
    cli: Invoke, space: Workspace, damage: str
) -> None:
    assert cli("datasets", "cache", "syn", "--workers", "1").exit_code == 0
    victim = sorted((space.home / "cache" / "syn").glob("*.npy"))[0]
    data = victim.read_bytes()
    victim.unlink()
    why = {"truncated": "truncated", "random bytes": "not a .npy file of the cache"}.get(damage)
    if damage == "truncated":
        victim.write_bytes(data[:200])
    elif damage == "random bytes":
        victim.write_bytes(os.urandom(9000))
    elif damage == "another shape":
        np.save(victim, np.zeros((4, 32, 32), np.uint8))
        why = "32x32 pixels where the index says 48x48"
    else:
        why = os.strerror(errno.ENOENT)
    sid = victim.name.removesuffix(".npy")
    before = runs_of(space)
    args = ("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--max-steps", "1", *QUICK)
    line = one_line_error(cli(*args, "--out", space.runs, "--name", "t"), 1)
    assert line == (
        f"error: {victim}: unreadable cache file of sample {sid!r} ({why}); rebuild the cache "
        "with 'hpatool datasets cache syn' or pass --cache off"
    )
    assert runs_of(space) == before and not (space.runs / "t").exists()
    # the rebuild the line asks for decodes that sample again
    assert cli("datasets", "cache", "syn", "--workers", "1").exit_code == 0
    from hpatool.data.cache import array_problem

    assert array_problem(victim, 48, 48) is None


def test_a_full_disk_stops_the_cache_build_with_one_line_and_keeps_it_unused(
    cli: Invoke, space: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpatool.data import cache_build

    saved = 0

    def full_after_five(path: Any, array: Any, allow_pickle: bool = False) -> None:
        nonlocal saved
        saved += 1
        if saved > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with open(path, "wb") as fh:
            np.lib.format.write_array(fh, array, allow_pickle=False)

    monkeypatch.setattr(cache_build.np, "save", full_after_five)
    line = one_line_error(cli("datasets", "cache", "syn", "--workers", "1"), 1)
    folder = space.home / "cache" / "syn"
    assert line.startswith(f"error: disk full: could not write {folder}/"), line
    assert line.endswith(
        "nothing was replaced: free some space, then run 'hpatool datasets cache' again: the "
        "samples cached so far are kept"
    ), line
    no_leftovers(folder)
    from hpatool.data.cache import cache_summary

    summary = cache_summary(space.home, "syn")
    assert summary is not None and not summary["complete"] and summary["samples"] == 5


def test_runs_average_killed_midway_leaves_no_run_and_a_rerun_makes_it(
    cli: Invoke, space: Workspace
) -> None:
    """SIGKILL while the averaged run's files are written (its hidden staging folder is
    there): no registry row, no run folder; the same command again makes the run."""
    import signal
    import time

    from tests.support import start_hpatool

    args = ["runs", "average", "k2", "--last", "2", "--name", "k2-swa", *QUICK]
    proc = start_hpatool(args, space.home)
    deadline = time.monotonic() + 120
    while not list(space.runs.glob(".k2-swa.partial-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no staging folder in 120 s"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGSTOP)  # stopped while it writes, then killed
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert ("k2-swa", "done") not in runs_of(space)
    assert not (space.runs / "k2-swa").exists()
    assert cli(*args).exit_code == 0
    assert ("k2-swa", "done") in runs_of(space)
    assert (space.runs / "k2-swa" / "checkpoint-best.pt").is_file()


def test_runs_export_on_a_full_disk_is_one_line_and_writes_nothing(
    cli: Invoke, space: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch writes the file in C++ and reports a full disk as a RuntimeError with no errno:
    with the disk nearly full that is the disk-full line, naming the file; nothing is left."""
    import shutil as shutil_mod

    from hpatool import _io
    from hpatool.engine.runs import export

    def full(model: Any, path: Path, example: Any) -> None:
        path.write_bytes(b"PK\x03\x04 half")  # what the writer got out before the disk filled
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        )

    usage = shutil_mod.disk_usage(space.base)
    monkeypatch.setitem(export._WRITERS, "torchscript", full)
    monkeypatch.setattr(_io.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    out = space.base / "m.pt"
    line = one_line_error(cli("runs", "export", "r1", "--format", "torchscript", "--out", out), 1)
    assert line == (
        f"error: disk full: could not write {out} (1 MiB left on its disk); nothing was "
        "replaced: free some space, then run the command again"
    )
    assert not out.exists() and not out.with_suffix(".pt.json").exists()
    no_leftovers(space.base)
    # with room on the disk the same failure is not called a full disk
    monkeypatch.setattr(_io.shutil, "disk_usage", lambda p: usage._replace(free=1 << 40))
    line = one_line_error(cli("runs", "export", "r1", "--format", "torchscript", "--out", out), 1)
    assert line.startswith(f"error: could not write {out} ([enforce fail"), line
    assert line.endswith("check the folder's free space and permissions, and run the command again")
    assert not out.exists()


def test_a_cache_index_that_is_a_folder_is_named_and_drop_clears_it(
    cli: Invoke, space: Workspace
) -> None:
    index = space.home / "cache" / "syn" / "index.sqlite"
    index.mkdir(parents=True)
    args = ("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--max-steps", "1", *QUICK)
    before = runs_of(space)
    line = one_line_error(cli(*args, "--out", space.runs, "--name", "t"), 1)
    assert line == (
        f"error: {index}: not a readable cache index (is a folder, not a file); remove the "
        "cache with 'hpatool datasets cache syn --drop' and build it again, or pass --cache off"
    )
    assert runs_of(space) == before
    assert cli("datasets", "cache", "syn", "--drop").exit_code == 0
    assert not index.exists()


@pytest.mark.parametrize("reader", ["--threshold", "prior=", "--config", "--oof"])
def test_a_file_in_another_encoding_is_named_by_line_and_byte(
    cli: Invoke, space: Workspace, reader: str
) -> None:
    """A file saved as Latin-1 (a spreadsheet's default on some systems): the line and the
    byte that is not UTF-8, not Python's codec message."""
    probs = space.base / "probs.csv"
    path = space.base / ("c.toml" if reader == "--config" else "latin1.csv")
    text = {
        "--threshold": "class,threshold\n0,0.3\nLysosomes caf\xe9,0.2\n",
        "prior=": "class,share\n0,0.3\nLysosomes caf\xe9,0.2\n",
        "--config": "# options\ncrops = 2  # caf\xe9\n",
        "--oof": probs.read_text().replace("\n", "\xe9\n", 2).replace("\xe9", "", 1),
    }[reader]
    path.write_bytes(text.encode("latin-1"))
    out = space.base / "o.csv"
    if reader == "--config":
        result = cli("predict", "--config", path, "--run", "r1", "--dataset", "syn", "--out", out)
        assert one_line_error(result, 2) == (
            f"error: --config {path}, line 2: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
        )
        return
    if reader == "--oof":
        result = cli("blend", probs, "--oof", path, "--dataset", "syn", "--out", out)
        assert one_line_error(result, 1) == (
            f"error: {path}, line 2: byte 0xe9 is not UTF-8 text: not an oof.csv"
        )
        return
    option = f"prior={path}" if reader == "prior=" else str(path)
    result = cli("blend", probs, "--threshold", option, "--out", out)
    assert one_line_error(result, 1) == (
        f"error: {path}, line 3: byte 0xe9 is not UTF-8 text; save the CSV as UTF-8"
    )
    assert not out.exists()


@pytest.mark.parametrize("damage", ["random bytes", "a JSON list", "a threshold of 2"])
def test_a_damaged_thresholds_json_is_refused_not_replaced_by_other_thresholds(
    cli: Invoke, space: Workspace, damage: str
) -> None:
    """``--threshold auto`` reads the run's thresholds.json (tuned on its view); a damaged one
    used to fall back silently to the checkpoint's own thresholds (tuned on another view), and
    ``runs export`` wrote ``"thresholds": null``. Now each names the file; an explicit number
    still scores."""
    path = space.runs / "r1" / "thresholds.json"
    doc = json.loads(path.read_text())
    path.unlink()
    if damage == "random bytes":
        path.write_bytes(os.urandom(600))
    elif damage == "a JSON list":
        path.write_text("[0.5]")
    else:
        doc["thresholds"][3] = 2
        path.write_text(json.dumps(doc))
    out = space.base / "o.csv"
    score = ("--run", "r1", "--dataset", "syn", *QUICK)
    for args in (("predict", *score, "--out", out), ("evaluate", *score)):
        line = one_line_error(cli(*args), 1)
        assert line.startswith(f"error: {path}: "), line
        assert not out.exists()
    model = space.base / "m.pt"
    line = one_line_error(cli("runs", "export", "r1", "--format", "torchscript", "--out", model), 1)
    assert line.startswith(f"error: {path}: unreadable thresholds ("), line
    assert line.endswith("restore the file, or train the run again"), line
    assert not model.exists() and not Path(f"{model}.json").exists()
    assert cli("predict", *score, "--threshold", "0.5", "--out", out).exit_code == 0


def test_two_runs_average_of_one_name_at_once_make_one_run(space: Workspace) -> None:
    """Two processes average into the same --name at once: one makes the run, the other ends
    with one line (exit 2) and leaves no folder of its own, whichever got there first."""
    from tests.support import start_hpatool

    args = ["runs", "average", "k2", "--last", "2", "--name", "k2-swa", *QUICK]
    procs = [start_hpatool(args, space.home) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(o[1] for p, o in zip(procs, outs, strict=True) if p.returncode == 2).strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "choose another --name" in err, err
    assert [r for r in runs_of(space) if r[0] == "k2-swa"] == [("k2-swa", "done")]
    assert sorted(p.name for p in space.runs.iterdir() if "k2-swa" in p.name) == ["k2-swa"]
