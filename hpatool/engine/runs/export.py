"""``hpatool runs export RUN --format torchscript|onnx --out FILE``: a run's best model as one
standalone file that needs neither hpatool nor timm, and ``FILE.json`` beside it saying how to
feed it, how to read its output and how hpatool scores with it.

The file holds the run's ``checkpoint-best.pt`` wrapped in ``PixelModel``: it takes float32
pixel values 0..255, ``(N, 4, H, W)``, channels R, G, B, Y (the four stains as
``hpatool.imaging.read_sample`` stacks them), normalises them as training and ``predict`` do
(``x / 255``, then ``(x - mean) / std`` per channel, with the mean and std stored in the
checkpoint) and returns the 28 classes' sigmoid probabilities ``(N, 28)``: a uint8 image cast
to float32 goes in as it is. It is traced on the CPU, in eval mode, in float32, on seeded
random pixels of ``(2, 4, crop, crop)``: ``torch.jit.trace`` (read back with
``torch.jit.load``), or the TorchScript-based ONNX exporter (``torch.onnx.export(...,
dynamo=False)``, opset ``ONNX_OPSET``, input ``pixels`` and output ``probabilities`` with
dynamic axes N, H and W), which needs the optional ``onnx`` package (``pip install
'hpatool[export]'``, which also brings onnxruntime).

Before the file replaces FILE (atomically), it is loaded back and run on other seeded pixels,
3 windows of the crop size and 1 image of another size (TorchScript: ``torch.jit.load``;
ONNX: onnxruntime when it is installed, else only ``onnx.checker``), and compared with the
model in hpatool: a difference over ``CHECK_ATOL`` at the crop size is a ``WorkFailed`` and
nothing is written; at the other size (an architecture, or a trace, bound to one input size)
the file is kept and ``FILE.json`` says its height and width are the crop's only.
``FILE.json`` (keys: ``info_doc``) also holds what ``predict --run RUN`` adds around the model:
the run's view (which windows to cut, how to aggregate their probabilities) and its per-class
thresholds (``thresholds.json``), and the hpatool, torch and timm versions.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import platform
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpatool._io import atomic_path, sha256_of, write_text_atomic
from hpatool.engine.models.checkpoint import ModelSpec, build_model_from_checkpoint, load_checkpoint
from hpatool.engine.runs.run_dir import BEST, RUN_FILES, RunDir, run_view
from hpatool.engine.views import View
from hpatool.errors import DataError, HpaToolError, NotFound, UsageError, WorkFailed
from hpatool.labels import NUM_CLASSES
from hpatool.outputs import check_output
from hpatool.registry import Registry

EXPORT_FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
#: The largest difference allowed between the exported file's probabilities and the model's.
CHECK_ATOL = 1e-3
INPUT_TEXT = "float32 (N, 4, H, W), pixel values 0..255, channels R, G, B, Y"
OUTPUT_TEXT = "sigmoid probabilities (N, 28)"
CHANNELS = (
    "R: red, microtubules",
    "G: green, the protein of interest",
    "B: blue, nucleus",
    "Y: yellow, endoplasmic reticulum",
)
#: How ``predict`` cuts an image into the windows of each TTA mode (``hpatool.engine.views``).
WINDOWS_TEXT = {
    "grid": "evenly spaced crop x crop windows covering every pixel, row by row: along a side "
    "of S pixels ceil(S / crop) of them, the i-th starting at round(i * (S - crop) / (n - 1)) "
    "(one, at 0, when crop >= S)",
    "grid+flips": "the grid windows, each under the first `crops` (at most 8) of the dihedral "
    "transforms (rotations by 90 degrees, each with or without a flip)",
    "crops": "`crops` random crop x crop windows (numpy.random.default_rng([seed, sample "
    "index])); crops = 1: the centre crop",
    "crops+flips": "`crops` random windows, window i under dihedral transform i mod 8",
}
WINDOWS_TEXT["flips"] = WINDOWS_TEXT["grid+flips"]


class PixelModel(nn.Module):
    """The exported module: pixel values 0..255 in, normalised as in hpatool (the operations of
    ``transforms.normalize``, in its order), sigmoid probabilities out."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(torch.float32) / 255.0 - self.mean) / self.std
        return torch.sigmoid(self.model(x).float())


@dataclass
class Exported:
    """The written file, its ``FILE.json`` and the document in it."""

    path: Path
    info_path: Path
    info: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return int(self.info["bytes"])

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "file": str(self.path), "json_file": str(self.info_path)}


def check_format(fmt: str) -> str:
    """``fmt`` if it is an export format this installation can write; else one line."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt!r} is invalid; use {' or '.join(EXPORT_FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise HpaToolError("--format onnx needs the onnx package: pip install 'hpatool[export]'")
    return fmt


def info_path_of(out: Path) -> Path:
    """``FILE.json``: the document written beside the exported ``FILE``."""
    return out.with_name(out.name + ".json")


def export_run(reg: Registry, run: str, fmt: str, out: str | Path) -> Exported:
    """Write run ``run``'s best model to ``out`` in format ``fmt`` and ``out.json`` beside it
    (see the module docstring)."""
    check_format(fmt)
    record = reg.run(run)
    run_dir = RunDir(record.out_dir)
    if not run_dir.best.is_file():
        raise NotFound(
            f"run {run!r} has no {BEST} in {record.out_dir}: it is written after the run's "
            f"first epoch; finish one ('hpatool train --resume --name {run}')"
        )
    target, info_path = _check_outputs(Path(out), reg, run_dir)
    _thresholds(run_dir)  # a damaged thresholds.json is refused before anything is written
    checkpoint = load_checkpoint(run_dir.best)
    model, spec = build_model_from_checkpoint(checkpoint, where=run_dir.best)
    wrapped = PixelModel(model, spec.mean, spec.std).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation and tracer warnings
        with atomic_path(target) as tmp:
            _WRITERS[fmt](wrapped, tmp, _pixels(2, spec.crop, spec.crop, seed=0))
            check = _check_file(fmt, wrapped, tmp, spec.crop)
    info = info_doc(fmt, target, record.name, spec, run_dir, checkpoint.get("epoch"), check)
    write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")
    return Exported(target, info_path, info)


def _check_outputs(out: Path, reg: Registry, run_dir: RunDir) -> tuple[Path, Path]:
    """``--out FILE`` and ``FILE.json``, checked before any work: neither a folder, the
    registry, a dataset's file, nor one of the run's own files."""
    inputs = [(run_dir.path / name, f"the run's {name}") for name in RUN_FILES]
    inputs += [(path, f"the run's {path.name}") for _, path in run_dir.epoch_checkpoints()]
    target = check_output(out, "--out", reg, inputs)
    info = info_path_of(target)
    check_output(info, "--out (its .json beside it)", reg, inputs)
    return target, info


def _pixels(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Seeded random pixel values 0..255 as float32 ``(n, 4, height, width)``."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 4, height, width)).astype(np.float32))


def _write_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(path))


def _write_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    axes = {INPUT_NAME: {0: "N", 2: "H", 3: "W"}, OUTPUT_NAME: {0: "N"}}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,  # the TorchScript-based exporter: no onnxscript, no network
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )


_WRITERS: dict[str, Callable[[nn.Module, Path, torch.Tensor], None]] = {
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
}


def _runner(fmt: str, path: Path) -> tuple[Callable[[torch.Tensor], np.ndarray] | None, str]:
    """A function running the written file on a pixel batch (``None``: none can, only its
    structure is checked) and what runs it."""
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path), map_location="cpu")
        return (lambda x: loaded(x).numpy()), f"torch.jit.load (torch {torch.__version__})"
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise WorkFailed(f"the exported ONNX file does not pass onnx.checker ({exc})") from None
    if importlib.util.find_spec("onnxruntime") is None:
        return None, f"onnx.checker (onnx {onnx.__version__}; onnxruntime is not installed)"
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    run = lambda x: np.asarray(session.run(None, {INPUT_NAME: x.numpy()})[0])  # noqa: E731
    return run, f"onnxruntime {ort.__version__}"


def _check_file(fmt: str, model: nn.Module, path: Path, crop: int) -> dict[str, Any]:
    """Run the written file and the model on the same pixels: 3 crop windows, then 1 image of
    another size; a difference over ``CHECK_ATOL`` at the crop is a ``WorkFailed``."""
    run, checked_with = _runner(fmt, path)
    doc: dict[str, Any] = {"with": checked_with, "inputs": [], "max_abs_diff": None}
    if run is None:
        doc["any_size"] = None  # unknown: nothing could run it
        return doc
    worst = 0.0
    doc["any_size"] = True
    for n, h, w in ((3, crop, crop), (1, crop + crop // 2, crop + crop // 4)):
        x = _pixels(n, h, w, seed=1)
        at_crop = (h, w) == (crop, crop)
        try:
            with torch.no_grad():
                expected = model(x).numpy()
                got = run(x)
            diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
        except Exception:  # another input size the architecture or the trace cannot take
            if at_crop:
                raise
            diff = None
        if diff is None or not diff <= CHECK_ATOL:
            if at_crop:
                raise WorkFailed(
                    f"the exported {fmt} model's probabilities differ from the run's model "
                    f"by {diff} on {crop}px windows (over {CHECK_ATOL}); nothing was written"
                )
            doc["any_size"] = False
            continue
        worst = max(worst, diff)
        doc["inputs"].append([n, 4, h, w])
    doc["max_abs_diff"] = worst
    return doc


def info_doc(
    fmt: str,
    target: Path,
    run: str,
    spec: ModelSpec,
    run_dir: RunDir,
    epoch: Any,
    check: dict[str, Any],
) -> dict[str, Any]:
    """``FILE.json``: what the exported file is, how to feed it and read it, and how ``predict
    --run RUN`` scores with it (the run's view and thresholds)."""
    view = run_view(run_dir.path)
    thresholds = _thresholds(run_dir)
    crop = spec.crop
    sizes = "any H, W" if check.get("any_size") is not False else f"H = W = {crop} only"
    doc: dict[str, Any] = {
        "format": fmt,
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": sha256_of(target),
        "run": run,
        "checkpoint": str(run_dir.best),
        "epoch": epoch,
        "arch": spec.arch,
        "timm_name": spec.timm_name,
        "input": INPUT_TEXT,
        "input_name": INPUT_NAME,
        "input_sizes": f"any N; {sizes} (trained on {crop}px crops)",
        "channels": list(CHANNELS),
        "normalisation": {
            "included": True,
            "steps": "x / 255, then (x - mean) / std per channel (R, G, B, Y)",
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "output": OUTPUT_TEXT,
        "output_name": OUTPUT_NAME,
        "class_names": list(spec.class_names),
        "crop": crop,
        "image_size": list(spec.image_size) if spec.image_size else None,
        **_view_doc(view, spec),
        "thresholds": thresholds.get("thresholds"),
        "thresholds_tuned_on": thresholds.get("tuned_on"),
        "labels": "class c is present where the aggregated probability >= thresholds[c]; "
        "predict gives an image with none its most probable class (--min-labels 1)",
        **({"opset": ONNX_OPSET} if fmt == "onnx" else {}),
        "check": check,
        "versions": _versions(fmt),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return doc


def _view_doc(view: View | None, spec: ModelSpec) -> dict[str, Any]:
    if view is None:
        return {"view": None, "view_text": None, "windows": None}
    size = spec.image_size or (view.crop, view.crop)
    return {
        "view": view.to_json(),
        "view_text": view.text(size),
        "windows": f"{WINDOWS_TEXT[view.tta]}; the windows' probabilities combined by their "
        f"{view.agg}",
    }


def _thresholds(run_dir: RunDir) -> dict[str, Any]:
    """``thresholds.json``'s thresholds and what they were tuned on (``{}`` when the run has
    none); one that cannot be read, or whose thresholds are not 28 numbers in [0, 1], is a
    ``DataError`` (FILE.json would otherwise say the model has no thresholds)."""
    path = run_dir.thresholds
    if not path.exists():
        return {}

    def bad(why: str) -> DataError:
        return DataError(
            f"{path}: unreadable thresholds ({why}); restore the file, or train the run again"
        )

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise bad(" ".join(str(exc).split())[:120]) from None
    values = doc.get("thresholds") if isinstance(doc, dict) else None
    if not isinstance(values, list) or len(values) != NUM_CLASSES:
        raise bad(f"no list of {NUM_CLASSES} thresholds")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in values
    ):
        raise bad("a threshold that is not a number in [0, 1]")
    return {"thresholds": [float(t) for t in values], "tuned_on": doc.get("tuned_on")}


def _versions(fmt: str) -> dict[str, str]:
    import timm

    from hpatool import __version__

    versions = {
        "hpatool": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }
    if fmt == "onnx":
        import onnx

        versions["onnx"] = onnx.__version__
    return versions
