"""Issue 22: errors nobody foresaw become one line naming the thing at fault; damaged registry
rows are said; a ``--config`` value is reported as the file's; ``runs import`` refuses what
cannot be scored; every ``HpaToolError`` survives pickling and torch's DataLoader re-raise."""

from __future__ import annotations

import contextlib
import importlib
import json
import pickle
import pkgutil
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import hpatool
from hpatool.errors import HpaToolError, original_message
from tests.support import SIZE, TRAIN, Invoke, claimed_size_png, one_line_error, register


def _all_error_classes() -> list[type[HpaToolError]]:
    for info in pkgutil.walk_packages(hpatool.__path__, "hpatool."):
        if info.name != "hpatool.__main__":
            importlib.import_module(info.name)
    found: list[type[HpaToolError]] = []
    todo = [HpaToolError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_hpatool_error_survives_pickling_and_the_dataloader_reraise() -> None:
    import torch._utils

    classes = _all_error_classes()
    assert len(classes) > 8
    for cls in classes:
        exc = cls.__new__(cls)
        HpaToolError.__init__(exc, f"/data/x_red.png: a problem of {cls.__name__}")
        exc.__dict__["path"] = "/data/x_red.png"
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls and str(back) == str(exc), cls
        assert back.exit_code == exc.exit_code and back.__dict__["path"] == "/data/x_red.png"
        try:
            raise exc
        except HpaToolError:
            wrapper = torch._utils.ExceptionWrapper(where="in DataLoader worker process 0")
        with pytest.raises(cls) as info:
            wrapper.reraise()
        assert str(info.value) == str(exc), cls
    assert original_message("plain text") == "plain text"


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(24, SIZE, seed=11)


def test_a_bad_image_in_a_loader_worker_is_one_line_naming_it(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    register(cli, data)
    victim = sorted(p for p in data.glob("*_green.png"))[-1]
    claimed_size_png(victim, 40_000, 40_000)  # 1.6 Gpx: over the pixel limit
    result = cli("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "1",
                 "--out", tmp_path / "runs", "--oversample", "none")  # fmt: skip
    text = one_line_error(result, 1)
    assert "unexpected" not in text and str(victim) in text


def test_non_utf8_names_and_damaged_rows_are_named(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import os

    odd = os.fsdecode(bytes(tmp_path) + b"/images\xff")
    os.mkdir(odd)
    text = one_line_error(cli("datasets", "add", "x", "--labels", synth_dir / "labels.csv",
                              "--root", odd))  # fmt: skip
    assert "\\xff' is not valid UTF-8 text" in text and "unexpected" not in text

    register(cli, synth_dir)
    with contextlib.closing(sqlite3.connect(home / "registry.sqlite")) as conn, conn:
        conn.execute("UPDATE samples SET sample_id = '../../etc/passwd' WHERE idx = 0")
    text = one_line_error(cli("stats", "syn"), 1)
    assert "table samples, dataset 'syn', column sample_id: bad value '../../etc/passwd'" in text


def test_runs_list_says_a_damaged_row_and_config_values_name_their_file(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    runs = tmp_path / "runs"
    trained = cli("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
                  "--out", runs, "--name", "r")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = -4\n", encoding="utf-8")
    text = one_line_error(cli("train", "--config", bad, "--dataset", "syn"))
    assert text == f"error: --config {bad}: epochs = -4: --epochs -4 is invalid; train for at " \
        "least 1 epoch"  # fmt: skip
    badp = tmp_path / "badp.toml"
    badp.write_text("[predict]\ncrops = 0\n", encoding="utf-8")
    text = one_line_error(cli("predict", "--config", badp, "--run", "r", "--dataset", "syn"))
    assert text.startswith(f"error: --config {badp}: crops = 0: --crops 0 is invalid")

    with contextlib.closing(sqlite3.connect(home / "registry.sqlite")) as conn, conn:
        conn.execute("UPDATE runs SET datasets = 'not json' WHERE name = 'r'")
    listed = cli("runs", "list", "--json")
    assert listed.exit_code == 0
    assert listed.stderr.startswith("warning: registry ") and "run 'r', column datasets" in (
        listed.stderr
    )
    assert json.loads(listed.stdout)[0]["problem"].startswith("registry ")
    text = one_line_error(cli("runs", "show", "r"), 1)
    assert "bad value 'not json'" in text


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "another arch"])
def test_runs_import_refuses_checkpoints_that_do_not_load(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path, damage: str
) -> None:
    import torch

    register(cli, synth_dir)
    runs = tmp_path / "runs"
    trained = cli("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
                  "--out", runs, "--name", "r")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    copy = tmp_path / "copy"
    shutil.copytree(runs / "r", copy)
    best = copy / "checkpoint-best.pt"
    if damage == "random bytes":
        best.write_bytes(bytes(range(256)) * 8)
    elif damage == "truncated":
        best.write_bytes(best.read_bytes()[:5000])
    else:
        doc = torch.load(best, weights_only=True)
        doc["timm_name"] = "resnet18"
        torch.save(doc, best)
    text = one_line_error(cli("runs", "import", copy, "--name", "r2"), 1)
    assert str(best) in text and "unexpected" not in text
    assert '"r2"' not in cli("runs", "list", "--json").stdout  # nothing registered


def test_an_output_folder_where_the_lock_cannot_be_made_is_one_line(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (EROFS; as root, permissions would not stop the write) is named."""
    import builtins
    import errno

    real_open = builtins.open

    def read_only(file: object, *args: object, **kwargs: object) -> object:
        if str(file).endswith(".hpatool-lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", read_only)
    out = tmp_path / "out"
    text = one_line_error(cli("preprocess", synth_dir, "--out", out, "--size", "32"), 1)
    assert f"{out}: cannot create its lock file .hpatool-lock (Read-only file system)" in text
