"""Checkpoints: atomic save, ``weights_only=True`` load, RNG states, and rebuilding a model.

A checkpoint is a dict with fixed keys (``format`` = ``"hpatool-checkpoint"``, ``version`` = 1,
then the keys listed in ``hpatool.engine.training.state``, which writes and reads them), holding
only
tensors, dicts, lists, strings, numbers, booleans and ``None`` so that
``torch.load(path, weights_only=True)`` reads it. Its ``model_spec`` says how to rebuild the
model and feed it; ``build_model_from_checkpoint(path)`` gives ``(model, spec)`` from a
checkpoint file alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpatool._io import atomic_path, describe_load_error, path_problem
from hpatool.errors import DataError, HpaToolError, NotFound

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "hpatool-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``).

    torch writes through a Python file object, not a path: then a full disk is an ``OSError``
    with its errno (behind torch's ``RuntimeError``), which ``atomic_path`` turns into a
    ``DiskFull`` naming ``path``, where torch's own C++ writer would only say "unexpected pos".
    """
    import torch

    doc = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(doc, fh)
        except RuntimeError as exc:
            # torch turns whatever the file's write raised (a full disk; Ctrl-C or SIGTERM,
            # whose handlers raise there too) into a RuntimeError: raise that instead.
            if isinstance(exc.__context__, OSError | KeyboardInterrupt | HpaToolError):
                raise exc.__context__ from None
            raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing or foreign file is one-line error."""
    import torch

    p = Path(path)
    if not p.is_file():
        problem = path_problem(p).replace("no such file", "no such checkpoint file")
        raise NotFound(f"{p}: {problem}")
    try:
        doc = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # any unpickling error means a bad file
        raise DataError(
            f"{p}: not a readable checkpoint: {describe_load_error(exc)}; pass a "
            "checkpoint-*.pt written by 'hpatool train'"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{p}: not an hpatool checkpoint (no format={FORMAT!r} key)")
    if int(doc.get("version", 0)) > VERSION:
        raise DataError(
            f"{p}: checkpoint version {doc.get('version')} is newer than this hpatool's {VERSION}; "
            "upgrade hpatool"
        )
    return doc


# ------------------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as weights_only-loadable values."""
    import torch

    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "state": list(py_internal), "gauss_next": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo ``capture_rng_state``: set torch, numpy, python (and CUDA, if present) RNG states."""
    import torch

    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            np.asarray(npst["keys"].numpy(), dtype=np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------- model from file


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a trained model and feed it: everything prediction needs."""

    arch: str
    timm_name: str
    in_chans: int
    num_classes: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    datasets: tuple[str, ...]
    image_size: tuple[int, int] | None  # (height, width) of the first dataset's images

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "timm_name": self.timm_name,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "datasets": list(self.datasets),
            "image_size": list(self.image_size) if self.image_size else None,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelSpec:
        size = doc.get("image_size")
        return cls(
            arch=str(doc["arch"]),
            timm_name=str(doc["timm_name"]),
            in_chans=int(doc["in_chans"]),
            num_classes=int(doc["num_classes"]),
            crop=int(doc["crop"]),
            mean=tuple(float(v) for v in doc["mean"]),
            std=tuple(float(v) for v in doc["std"]),
            class_names=tuple(str(v) for v in doc["class_names"]),
            datasets=tuple(str(v) for v in doc["datasets"]),
            image_size=(int(size[0]), int(size[1])) if size else None,
        )


def model_spec(checkpoint: dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` stored in a loaded checkpoint."""
    try:
        return ModelSpec.from_json(checkpoint["model_spec"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"checkpoint has no usable model_spec ({exc})") from None


def build_model_from_checkpoint(
    source: str | Path | dict[str, Any],
    device: str | torch.device = "cpu",
    where: str | Path | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the trained model (in eval mode, on ``device``) from a checkpoint file or dict
    (``where``: the file a dict was read from, named in errors)."""
    from hpatool.engine.models.factory import create_model

    ckpt = load_checkpoint(source) if not isinstance(source, dict) else source
    if where is None:
        where = "checkpoint" if isinstance(source, dict) else str(source)
    try:
        spec = model_spec(ckpt)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    model = create_model(spec.timm_name, in_chans=spec.in_chans, num_classes=spec.num_classes)
    weights = ckpt.get("model")
    problem = (
        weights_mismatch(model.state_dict(), weights)
        if isinstance(weights, dict)
        else "it holds no weights"
    )
    if problem or not isinstance(weights, dict):
        raise DataError(
            f"{where}: its weights are not those of {spec.timm_name} ({spec.in_chans} channels, "
            f"{spec.num_classes} classes), the model its model_spec names: {problem}; pass a "
            "checkpoint written by 'hpatool train' for this model"
        )
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise DataError(f"{where}: weights do not fit {spec.timm_name}: {text}") from None
    model.to(device)
    model.eval()
    return model, spec


def weights_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> str | None:
    """How the state dict ``given`` differs from a model's ``expected`` one (missing names,
    names the model does not have, tensors of other shapes: how many, and the first), or
    ``None`` when every name and shape matches."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    shapes = [
        k
        for k, v in expected.items()
        if k in given and tuple(getattr(given[k], "shape", ())) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing (the first: {missing[0]!r})")
    if extra:
        parts.append(f"{len(extra)} weights the model does not have (the first: {extra[0]!r})")
    if shapes:
        k = shapes[0]
        have = "x".join(map(str, getattr(given[k], "shape", ()))) or "no tensor"
        want = "x".join(map(str, expected[k].shape))
        parts.append(f"{len(shapes)} of another shape ({k!r}: {have}, the model's {want})")
    return "; ".join(parts) or None


def trained_amp(checkpoint: dict[str, Any]) -> str | None:
    """The autocast dtype a checkpoint's run trained and validated in, as its ``config``
    records it (``"bfloat16"``, ``"float16"``; ``None``: float32, ``--no-amp`` or the CPU). A
    checkpoint that records no configuration (a bare one): ``"float16"``, autocast's default
    on CUDA."""
    config = checkpoint.get("config")
    if not isinstance(config, dict) or "amp" not in config:
        return "float16"
    amp = config["amp"]
    return str(amp) if amp else None
