"""``hpatool runs export``: a run's best model as a TorchScript or ONNX file that, fed the
windows ``predict`` cuts and aggregated the same way, gives ``predict``'s probabilities; the
``FILE.json`` beside it; and the one-line refusals."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpatool.engine.views import View
from hpatool.imaging import read_sample
from hpatool.labels import CLASS_NAMES
from tests.support import ARCH, RUN_CROPS, Invoke, Workspace, one_line_error


def _probs_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        return {
            row["Id"]: np.array([float(row[str(c)]) for c in range(28)])
            for row in csv.DictReader(fh)
        }


def _exported_probs(
    run: Callable[[np.ndarray], np.ndarray], data: Path, ids: list[str], view: View
) -> dict[str, np.ndarray]:
    """Each sample's probabilities as ``predict`` makes them, from the exported file: the
    view's windows of the raw pixels (float32 0..255), aggregated by the view's ``agg``."""
    result = {}
    for index, sid in enumerate(ids):
        img = read_sample(data, sid)
        windows = view.windows_of(index, img.shape[1:], seed=0)
        assert all(k == 0 for _, _, k in windows)  # the grid: no flips
        c = view.crop
        stack = np.stack([img[:, t : t + c, left : left + c] for t, left, _ in windows])
        probs = run(stack.astype(np.float32))
        assert probs.shape == (len(windows), 28)
        result[sid] = probs.mean(axis=0) if view.agg == "mean" else probs.max(axis=0)
    return result


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exports_reproduce_predict(cli: Invoke, trained_run: Workspace, tmp_path: Path) -> None:
    data, runs, home = trained_run.data, trained_run.runs, trained_run.home
    probs_csv = tmp_path / "probs.csv"
    predicted = cli(
        "predict", "--run", "r1", "--dataset", "syn", "--workers", "0", "--device", "cpu",
        "--tta", "grid", "--agg", "mean", "--probs", probs_csv, "--out", tmp_path / "sub.csv",
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    expected = _probs_csv(probs_csv)
    ids = list(expected)
    view = View(32, RUN_CROPS, "mean", "grid")  # the run's view: what the export records

    # TorchScript
    ts = tmp_path / "out" / "model.pt"
    result = cli("runs", "export", "r1", "--format", "torchscript", "--out", ts)
    assert result.exit_code == 0, result.output
    assert "Exported run r1's best model (torchscript," in result.stdout
    assert str(ts) in result.stdout and f"{ts}.json" in result.stdout
    loaded = torch.jit.load(str(ts))

    def run_ts(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    diff_ts = _max_diff(_exported_probs(run_ts, data, ids, view), expected)
    assert diff_ts < 1e-4, diff_ts
    info = json.loads(Path(f"{ts}.json").read_text())
    _check_info(info, "torchscript", runs / "r1")

    # ONNX, with --json
    onnx_file = tmp_path / "model.onnx"
    result = cli("runs", "export", "r1", "--format", "onnx", "--out", onnx_file, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["file"] == str(onnx_file) and shown["json_file"] == f"{onnx_file}.json"
    assert shown["bytes"] == onnx_file.stat().st_size
    info = json.loads(Path(f"{onnx_file}.json").read_text())
    _check_info(info, "onnx", runs / "r1")
    assert info["opset"] == 17 and shown["sha256"] == info["sha256"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])

    def run_onnx(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"pixels": x})[0])

    diff_onnx = _max_diff(_exported_probs(run_onnx, data, ids, view), expected)
    assert diff_onnx < 1e-4, diff_onnx
    print(f"max abs diff vs predict: torchscript {diff_ts:.3g}, onnx {diff_onnx:.3g}")

    # refusals that need a run: the run's own files, the registry, a folder
    best = runs / "r1" / "checkpoint-best.pt"
    text = one_line_error(cli("runs", "export", "r1", "--format", "onnx", "--out", best))
    assert "is the run's checkpoint-best.pt" in text
    text = one_line_error(
        cli("runs", "export", "r1", "--format", "onnx", "--out", runs / "r1" / "thresholds")
    )
    assert "thresholds.json" in text and "is the run's thresholds.json" in text
    registry = home / "registry.sqlite"
    text = one_line_error(cli("runs", "export", "r1", "--format", "onnx", "--out", registry))
    assert "hpatool's registry" in text
    text = one_line_error(cli("runs", "export", "r1", "--format", "onnx", "--out", tmp_path))
    assert "is a folder" in text
    # a run without its best checkpoint
    shutil.move(best, tmp_path / "best.pt")
    text = one_line_error(cli("runs", "export", "r1", "--format", "torchscript", "--out", ts))
    assert "run 'r1' has no checkpoint-best.pt" in text


def _check_info(info: dict[str, Any], fmt: str, run_dir: Path) -> None:
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    assert info["format"] == fmt and info["run"] == "r1"
    assert info["arch"] == ARCH and info["timm_name"] == ARCH
    assert info["input"] == "float32 (N, 4, H, W), pixel values 0..255, channels R, G, B, Y"
    assert info["output"] == "sigmoid probabilities (N, 28)"
    assert info["class_names"] == list(CLASS_NAMES)
    norm = info["normalisation"]
    assert norm["included"] is True and len(norm["mean"]) == len(norm["std"]) == 4
    assert info["view"] == {"crop": 32, "crops": RUN_CROPS, "agg": "mean", "tta": "grid"}
    assert info["view"] == thresholds["view"]
    assert info["thresholds"] == thresholds["thresholds"]
    assert info["thresholds_tuned_on"] == "oof"
    assert info["check"]["max_abs_diff"] <= 1e-3 and info["check"]["any_size"] is True
    assert info["versions"]["torch"] == torch.__version__
    assert set(info["versions"]) >= {"hpatool", "torch", "timm"}


def test_export_refusals_without_a_run(cli: Invoke, tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "m.onnx"
    text = one_line_error(cli("runs", "export", "nope", "--format", "onnx", "--out", out))
    assert "nope" in text
    text = one_line_error(cli("runs", "export", "nope", "--format", "tflite", "--out", out))
    assert text == "error: --format 'tflite' is invalid; use torchscript or onnx"
    assert not out.exists()

    find_spec = importlib.util.find_spec

    def no_onnx(name: str, *args: Any) -> Any:
        return None if name == "onnx" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_onnx)
    text = one_line_error(cli("runs", "export", "r", "--format", "onnx", "--out", out), code=1)
    assert text == "error: --format onnx needs the onnx package: pip install 'hpatool[export]'"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_help_names_the_formats(cli: Invoke, fmt: str) -> None:
    result = cli("runs", "export", "--help")
    assert result.exit_code == 0 and fmt in result.stdout
