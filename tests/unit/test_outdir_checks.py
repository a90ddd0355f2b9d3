"""The cheap "is this output whole" check, the UTF-8 name check and the output-folder lock."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.convert.lock import LOCK_FILE, FolderBusy, output_lock
from hpatool.convert.outdir import check_path_text, is_utf8, looks_whole
from hpatool.errors import UsageError


def test_looks_whole_finds_empty_and_truncated_images(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    png, jpg = tmp_path / "a_red.png", tmp_path / "a_red.jpg"
    Image.fromarray(arr).save(png)
    Image.fromarray(arr).save(jpg, "JPEG")
    assert looks_whole(png) and looks_whole(jpg)
    for path in (png, jpg):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert not looks_whole(path), path
        path.write_bytes(b"")
        assert not looks_whole(path), path
        path.write_bytes(data + b"\0" * 16 if path is jpg else data)
    assert looks_whole(png) and looks_whole(jpg)  # a JPEG padded after its EOI is whole
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    png.write_bytes(buf.getvalue())  # a JPEG named .png is no PNG
    assert not looks_whole(png)
    assert not looks_whole(tmp_path / "missing.png")


def test_utf8_names() -> None:
    assert is_utf8("café_red.png") and not is_utf8("caf\udce9_red.png")
    check_path_text(Path("fine"), "--out folder")
    with pytest.raises(UsageError, match=r"the --out folder '.*x\\udce9' has a name that is not"):
        check_path_text(Path("x\udce9"), "--out folder")


def test_output_lock(tmp_path: Path) -> None:
    with output_lock(tmp_path, "preprocess"):
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "preprocess"
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()} on "), output_lock(tmp_path, "x"):
            pass
        with pytest.raises(FolderBusy), output_lock(tmp_path, "x", "1/2"):
            pass
    with output_lock(tmp_path, "a", "1/2"), output_lock(tmp_path, "b", "2/2"):
        busy = pytest.raises(FolderBusy, match=r"\(a --shard 1/2, started")
        with busy, output_lock(tmp_path, "c", "1/2"):
            pass
        busy = pytest.raises(FolderBusy, match=r"\(a --shard 1/2, started")
        with busy, output_lock(tmp_path, "d"):
            pass
    with output_lock(tmp_path, "again"):  # released: taken again
        assert FolderBusy("x").exit_code == 1


def test_every_run_file_is_protected_from_other_outputs() -> None:
    """``outputs.RUN_FILE_NAME`` names every file a run folder holds (kept in step with
    ``run_dir.RUN_FILES``): no command's output may write over one of a registered run."""
    from hpatool.engine.runs.run_dir import EPOCH_CHECKPOINT, RUN_FILES
    from hpatool.outputs import RUN_FILE_NAME

    for name in (*RUN_FILES, EPOCH_CHECKPOINT.format(7), "r1.json"):
        assert RUN_FILE_NAME.match(name), name
    for name in ("submission.csv", "probs.csv", "f1.png", "oof.csv.bak"):
        assert not RUN_FILE_NAME.match(name), name
