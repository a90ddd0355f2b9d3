"""``create_model``: 4-channel (R, G, B, Y) CNNs with 28 outputs, over timm.

``--arch`` takes the aliases ``resnet50`` and ``inceptionresnetv2`` (timm's
``inception_resnet_v2``) or any other timm model name (``timm.list_models()``). The model itself
is always built with ``pretrained=False``.

``pretrained=PATH`` loads weights from a local file: a timm or torchvision state dict (PyTorch
pickle or ``.safetensors``; also one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``, and
``module.`` prefixes from DataParallel), or a ``checkpoint-best.pt`` / ``checkpoint-last.pt``
written by ``hpatool train`` (fine-tuning from a run).

``pretrained="imagenet"`` loads timm's default pretrained weights of the architecture
(``hpatool.engine.models.imagenet``: from the Hugging Face or torch cache, else downloaded once;
offline, one
line saying how to get the file); the state dict then goes through the same code as a local
file.

The classifier head is loaded when the file's has the model's shapes (a run's 28 classes) and
freshly initialised otherwise (ImageNet's 1000 classes); a ``PretrainedWeights`` warning says in
one line what was loaded and which. The first convolution of a 3-channel file is adapted to 4
inputs by this rule:

    R, G, B filters are copied from the file's R, G, B filters;
    Y (yellow, endoplasmic reticulum) is initialised as the mean of the R and G filters,

because in HPA composites yellow is shown as red + green. A file whose first convolution already
has 4 inputs is used as is.

The smallest input each architecture takes is ``engine.models.input_size``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool._io import describe_load_error, path_problem
from hpatool.errors import DataError, Note, NotFound, UsageError
from hpatool.labels import NUM_CLASSES

#: ``--pretrained imagenet``: timm's ImageNet weights for the architecture.
IMAGENET = "imagenet"

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``--arch`` aliases -> timm model names.
ARCH_ALIASES: dict[str, str] = {
    "resnet50": "resnet50",
    "inceptionresnetv2": "inception_resnet_v2",
}
IN_CHANS = 4


def resolve_arch(arch: str) -> str:
    """The timm model name for an ``--arch`` value (an alias, a timm name in any case); an
    unknown name is a ``UsageError`` naming the closest valid ones."""
    import timm

    key = (arch or "").strip()
    if key.lower() in ARCH_ALIASES:
        return ARCH_ALIASES[key.lower()]
    if key and timm.is_model(key):
        return key
    if key and timm.is_model(key.lower()):
        return key.lower()
    near = closest_archs(key)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise UsageError(
        f"unknown --arch {arch!r}{hint}; use {' or '.join(ARCH_ALIASES)} or any timm model name "
        "(python -c 'import timm; print(timm.list_models())')"
    )


def closest_archs(arch: str, n: int = 5) -> list[str]:
    """Up to ``n`` valid ``--arch`` values (our aliases and timm's model names) closest to
    ``arch``: by spelling (``difflib``), else those that contain it. About 10 ms."""
    import difflib

    import timm

    key = (arch or "").strip().lower()
    if not key:
        return []
    names = [*ARCH_ALIASES, *(m for m in timm.list_models() if m not in ARCH_ALIASES)]
    near = difflib.get_close_matches(key, names, n=n, cutoff=0.6)
    if not near:
        near = [m for m in names if key in m][:n]
    return near


def first_conv_name(model: nn.Module) -> str:
    """Dotted name of the model's first convolution (from timm's pretrained_cfg, else the first
    ``Conv2d`` found)."""
    from torch import nn

    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("first_conv") if isinstance(cfg, dict) else None
    modules = dict(model.named_modules())
    if isinstance(name, str) and isinstance(modules.get(name), nn.Conv2d):
        return name
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return mod_name
    raise ValueError("model has no Conv2d layer")


def classifier_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    return name if isinstance(name, str) else None


def adapt_first_conv(weight: torch.Tensor, in_chans: int = IN_CHANS) -> torch.Tensor:
    """3-input-channel conv weights ``(O, 3, kh, kw)`` -> ``(O, in_chans, kh, kw)``.

    For 4 channels: R, G, B copied, Y = (R + G) / 2. For other counts the RGB filters are
    repeated cyclically. Weights that already have ``in_chans`` inputs are returned as they are.
    """
    import torch

    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D conv weight, got shape {tuple(weight.shape)}")
    have = weight.shape[1]
    if have == in_chans:
        return weight.clone()
    if have != 3:
        raise ValueError(f"cannot adapt a first convolution with {have} inputs to {in_chans}")
    if in_chans == 4:
        yellow = (weight[:, 0:1] + weight[:, 1:2]) / 2
        return torch.cat([weight, yellow], dim=1)
    reps = -(-in_chans // 3)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans].clone()


class PretrainedWeights(Note):
    """What ``--pretrained`` loaded, and whether the classifier head was kept or re-initialised
    (the CLI shows it as one ``note:`` line: a load that worked is not a problem)."""


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict in ``path`` and, for a checkpoint written by ``hpatool train``, what it
    says about itself (``arch``, ``timm_name``, ``epoch``, ``run``); else ``None``."""
    import torch

    if not path.is_file():
        raise NotFound(
            f"--pretrained {path}: {path_problem(path)}; give a local .pth/.pt state dict"
        )
    obj: Any
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as exc:  # any decoding error means a bad file
            raise DataError(
                f"--pretrained {path}: not a readable safetensors file: {describe_load_error(exc)}"
            ) from None
        return _strip_module_prefix(obj), None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling error means a bad file
        raise DataError(
            f"--pretrained {path}: not a readable PyTorch state dict: {describe_load_error(exc)}"
        ) from None
    checkpoint = _checkpoint_info(obj)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise DataError(
            f"--pretrained {path}: not a state dict (a mapping of parameter names to tensors)"
        )
    return _strip_module_prefix(obj), checkpoint


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _checkpoint_info(obj: Any) -> dict[str, Any] | None:
    """``{"arch", "timm_name", "epoch", "run"}`` of an ``hpatool train`` checkpoint (see
    ``hpatool.engine.training.state``), else ``None``."""
    if not (isinstance(obj, dict) and obj.get("format") == "hpatool-checkpoint"):
        return None
    config = obj.get("config")
    options = config.get("options") if isinstance(config, dict) else None
    run = options.get("name") if isinstance(options, dict) else None
    return {
        "arch": obj.get("arch"),
        "timm_name": obj.get("timm_name"),
        "epoch": obj.get("epoch"),
        "run": run if isinstance(run, str) else None,
    }


def _head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the model's classifier (empty if timm names none)."""
    head = classifier_name(model)
    if not head:
        return set()
    return {k for k in model.state_dict() if k.startswith(f"{head}.")}


def load_pretrained(
    model: nn.Module, path: Path, in_chans: int = IN_CHANS, arch: str | None = None
) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model``: an ImageNet-style 3-channel state dict (first
    convolution adapted), a 4-channel one, or a checkpoint written by ``hpatool train``.

    The classifier head is loaded when the file has one of the same shapes (a run's checkpoint:
    28 classes), else left freshly initialised (an ImageNet file: 1000 classes); one
    ``PretrainedWeights`` warning says which. Returns a summary: ``{"path", "loaded",
    "adapted", "head"}`` (``head``: ``"kept"`` or ``"reinitialised"``). A file that does not
    fit the model (missing, extra or differently shaped backbone parameters) raises
    ``DataError`` naming an example.
    """
    state, checkpoint = _read_state_dict(Path(path))
    return _load_state(model, state, str(path), checkpoint, in_chans, arch, stacklevel=3)


def _load_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: str,
    checkpoint: dict[str, Any] | None,
    in_chans: int,
    arch: str | None,
    imagenet: str | None = None,
    stacklevel: int = 2,
) -> dict[str, Any]:
    """The one code path from a state dict to ``model`` (see ``load_pretrained``); ``path`` is
    what messages call the source, ``imagenet`` the pretrained tag of timm's weights."""
    import warnings

    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = arch or cfg.get("architecture") or type(model).__name__
    timm_name = cfg.get("architecture") if isinstance(cfg, dict) else None
    if (
        checkpoint
        and checkpoint["timm_name"]
        and timm_name
        and checkpoint["timm_name"] != timm_name
    ):
        raise DataError(
            f"--pretrained {path} is a checkpoint of --arch {checkpoint['arch']} "
            f"({checkpoint['timm_name']}), not --arch {arch}; pass --arch {checkpoint['arch']}"
        )
    own = model.state_dict()
    conv_key = f"{first_conv_name(model)}.weight"
    head_keys = _head_keys(model)
    file_head = {k: v for k, v in state.items() if k in head_keys}
    keep_head = (
        bool(head_keys)
        and set(file_head) == head_keys
        and all(v.shape == own[k].shape for k, v in file_head.items())
    )
    skip = head_keys if not keep_head else set()
    new_state, adapted_from = _fitted_state(state, own, conv_key, skip, in_chans, path, arch)
    model.load_state_dict(new_state, strict=False)
    ours = next((int(own[k].shape[0]) for k in sorted(head_keys) if k.endswith(".weight")), 0)
    summary = {
        "path": str(path),
        "loaded": len(new_state),
        "adapted": adapted_from is not None,
        "head": "kept" if keep_head or not head_keys else "reinitialised",
    }
    line = _loaded_line(
        path, summary, checkpoint, adapted_from, file_head, in_chans, ours, imagenet
    )
    warnings.warn(line, PretrainedWeights, stacklevel=stacklevel)
    return summary


def _fitted_state(
    state: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    conv_key: str,
    skip: set[str],
    in_chans: int,
    path: str,
    arch: str,
) -> tuple[dict[str, torch.Tensor], int | None]:
    """``state``'s tensors in the model's shapes and dtypes (the first convolution adapted
    from 3 channels; the ``skip`` keys, a head that does not fit, left out), and the channels
    the first convolution was adapted from; a ``DataError`` naming an example when tensors are
    missing, extra or of other shapes."""
    adapted_from: int | None = None
    new_state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    unexpected: list[str] = []
    for key, value in state.items():
        if key in skip:
            continue
        if key not in own:
            if not key.endswith("num_batches_tracked"):
                unexpected.append(key)
            continue
        if key == conv_key and value.ndim == 4 and value.shape[1] != own[key].shape[1]:
            have = int(value.shape[1])
            try:
                value = adapt_first_conv(value, in_chans)
            except ValueError:
                mismatched.append(f"{key} {tuple(value.shape)}")
                continue
            adapted_from = have
        if value.shape != own[key].shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
            continue
        new_state[key] = value.to(own[key].dtype)
    missing = [
        k
        for k in own
        if k not in new_state and k not in skip and not k.endswith("num_batches_tracked")
    ]
    if mismatched or missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} of its parameters missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} parameters it does not have (e.g. {unexpected[0]})")
        if mismatched:
            detail.append(f"{len(mismatched)} with other shapes (e.g. {mismatched[0]})")
        raise DataError(
            f"--pretrained {path} does not fit --arch {arch}: {'; '.join(detail)}; give "
            "weights of the same architecture"
        )
    return new_state, adapted_from


def _loaded_line(
    path: str | Path,
    summary: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    adapted_from: int | None,
    file_head: dict[str, torch.Tensor],
    in_chans: int,
    ours: int,
    imagenet: str | None = None,
) -> str:
    """The one line that says what ``--pretrained`` loaded and what became of the head."""
    what = f"--pretrained {path}: loaded {summary['loaded']} tensors"
    if imagenet is not None:
        what += f" of the ImageNet weights of {imagenet}"
    if checkpoint is not None:
        run = f"run {checkpoint['run']!r}, " if checkpoint["run"] else ""
        what += f" of an hpatool checkpoint ({run}--arch {checkpoint['arch']}, epoch "
        what += f"{checkpoint['epoch']})"
    if adapted_from is not None:
        what += f", first convolution adapted from {adapted_from} to {in_chans} channels"
    if summary["head"] == "kept":
        return f"{what}; its classifier head was kept (fine-tuning from these weights)"
    outputs = [int(v.shape[0]) for k, v in file_head.items() if k.endswith(".weight")]
    theirs = f"its {outputs[0]}-class head does not fit" if outputs else "it has no head for"
    return f"{what}; {theirs} the {ours} classes: the head was re-initialised"


def create_model(
    arch: str,
    in_chans: int = IN_CHANS,
    num_classes: int = NUM_CLASSES,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model for ``arch`` with ``in_chans`` inputs and ``num_classes`` outputs.

    ``pretrained`` is ``None``/``"none"`` (random init), ``"imagenet"`` (timm's ImageNet weights
    of the architecture, see ``imagenet_state_dict``) or the path of a local state dict (see the
    module docstring for how the first convolution is adapted).
    """
    import timm

    name = resolve_arch(arch)
    from hpatool.engine.models import imagenet as weights

    imagenet = pretrained is not None and str(pretrained).lower() == IMAGENET
    # fetched first: no weights, no network -> one line before anything is built
    state = weights.imagenet_state_dict(name) if imagenet else None
    model = timm.create_model(
        name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs
    )
    if state is not None:
        _load_state(
            model,
            state,
            IMAGENET,
            None,
            in_chans,
            arch,
            imagenet=weights.imagenet_tag(name),
            stacklevel=3,
        )
    elif pretrained is not None and str(pretrained).lower() != "none":
        load_pretrained(model, Path(pretrained), in_chans=in_chans, arch=arch)
    return model
