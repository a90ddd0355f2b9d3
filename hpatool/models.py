"""``create_model``: 4-channel (R, G, B, Y) CNNs with 28 outputs, over timm.

``--arch`` takes the aliases ``resnet50`` and ``inceptionresnetv2`` (timm's
``inception_resnet_v2``) or any other timm model name (``timm.list_models()``). timm always builds
the model with ``pretrained=False``: nothing is ever downloaded.

``pretrained=PATH`` loads ImageNet-style 3-channel weights from a local file: a timm or
torchvision state dict (also one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``, and
``module.`` prefixes from DataParallel). The classifier is left freshly initialised (28 classes, not
1000). The first convolution is adapted to 4 inputs by this rule:

    R, G, B filters are copied from the file's R, G, B filters;
    Y (yellow, endoplasmic reticulum) is initialised as the mean of the R and G filters,

because in HPA composites yellow is shown as red + green. A file whose first convolution already
has 4 inputs is used as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool._io import describe_load_error
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.labels import NUM_CLASSES

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
    """The timm model name for an ``--arch`` value; unknown names list the valid ones."""
    import timm

    key = (arch or "").strip()
    if key.lower() in ARCH_ALIASES:
        return ARCH_ALIASES[key.lower()]
    if key and timm.is_model(key):
        return key
    near = timm.list_models(f"*{key.lower()}*")[:5] if key else []
    hint = f"; similar timm models: {', '.join(near)}" if near else ""
    raise UsageError(
        f"unknown --arch {arch!r}: use {' or '.join(ARCH_ALIASES)} or any timm model name "
        f"(see python -c 'import timm; print(timm.list_models())'){hint}"
    )


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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise NotFound(f"--pretrained {path}: no such file; give a local .pth/.pt state dict")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling error means a bad file
        raise DataError(
            f"--pretrained {path}: not a readable PyTorch state dict: {describe_load_error(exc)}"
        ) from None
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
    prefix = "module."
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def load_pretrained(
    model: nn.Module, path: Path, in_chans: int = IN_CHANS, arch: str | None = None
) -> dict[str, Any]:
    """Load 3-channel weights from ``path`` into ``model`` (first conv adapted, classifier kept).

    Returns a summary: ``{"path", "loaded", "adapted"}``. A file that does not fit the model
    (missing, extra or differently shaped backbone parameters) raises ``DataError`` naming an
    example.
    """
    state = _read_state_dict(Path(path))
    own = model.state_dict()
    conv_key = f"{first_conv_name(model)}.weight"
    head = classifier_name(model)
    head_prefix = f"{head}." if head else None
    adapted = False
    new_state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    unexpected: list[str] = []
    for key, value in state.items():
        if head_prefix and key.startswith(head_prefix):
            continue
        if key not in own:
            if not key.endswith("num_batches_tracked"):
                unexpected.append(key)
            continue
        if key == conv_key and value.ndim == 4 and value.shape[1] != own[key].shape[1]:
            try:
                value = adapt_first_conv(value, in_chans)
            except ValueError:
                mismatched.append(f"{key} {tuple(value.shape)}")
                continue
            adapted = True
        if value.shape != own[key].shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
            continue
        new_state[key] = value.to(own[key].dtype)
    missing = [
        k
        for k in own
        if k not in new_state
        and not (head_prefix and k.startswith(head_prefix))
        and not k.endswith("num_batches_tracked")
    ]
    if mismatched or missing or unexpected:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        arch = arch or cfg.get("architecture") or type(model).__name__
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
    model.load_state_dict(new_state, strict=False)
    return {"path": str(path), "loaded": len(new_state), "adapted": adapted}


def create_model(
    arch: str,
    in_chans: int = IN_CHANS,
    num_classes: int = NUM_CLASSES,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model for ``arch`` with ``in_chans`` inputs and ``num_classes`` outputs.

    ``pretrained`` is ``None``/``"none"`` (random init) or the path of a local 3-channel state
    dict (see the module docstring for how the first convolution is adapted).
    """
    import timm

    name = resolve_arch(arch)
    model = timm.create_model(
        name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs
    )
    if pretrained is not None and str(pretrained).lower() != "none":
        load_pretrained(model, Path(pretrained), in_chans=in_chans, arch=arch)
    return model
