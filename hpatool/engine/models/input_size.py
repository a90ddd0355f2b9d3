"""``check_input_size(arch, crop)`` refuses a crop the architecture cannot take (Inception stems
need 75 px) in one line naming the minimum, before any work: ``min_input_size`` reads
``MIN_INPUT_SIZE`` for the common architectures and measures the others once (a forward pass
of growing inputs through a randomly initialised model)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from hpatool.engine.models.factory import IN_CHANS, resolve_arch
from hpatool.errors import UsageError
from hpatool.labels import NUM_CLASSES

if TYPE_CHECKING:
    from torch import nn

#: The smallest square input (pixels) of an architecture, by timm name: measured with a forward
#: pass at eval (timm 1.0; every size from there up to 40 px more works too). ResNets and
#: EfficientNets pool adaptively, so any size works; the Inception stems' unpadded convolutions
#: need 75 px. Other names are measured on first use (``_measured_min_input``).
MIN_INPUT_SIZE: dict[str, int] = {
    "resnet10t": 1,
    "resnet18": 1,
    "resnet34": 1,
    "resnet50": 1,
    "inception_resnet_v2": 75,
    "inception_v3": 75,
    "inception_v4": 75,
    "densenet121": 29,
    "convnext_tiny": 32,
    "efficientnet_b0": 1,
}
#: The largest input the measurement tries.
_PROBE_MAX = 1024


def min_input_size(arch: str) -> int:
    """The smallest square crop (pixels) ``arch`` takes: from ``MIN_INPUT_SIZE``, else measured
    once per process (a binary search of forward passes on torch's ``meta`` device: shapes only,
    no arithmetic; a few seconds). ``UsageError`` if no size up to 1024 px works."""
    name = resolve_arch(arch)
    if name in MIN_INPUT_SIZE:
        return MIN_INPUT_SIZE[name]
    minimum = _measured_min_input(name)
    if minimum is None:
        raise UsageError(
            f"--arch {arch} takes no square input up to {_PROBE_MAX} px: "
            f"{_input_problem(name, _PROBE_MAX)}"
        )
    return minimum


def check_input_size(arch: str, crop: int) -> None:
    """``UsageError`` (one line, naming the minimum) if ``arch`` cannot take ``crop``-pixel
    inputs; for the names in ``MIN_INPUT_SIZE`` a table look-up, for others one forward pass on
    the ``meta`` device (cached). Call it before anything is written or registered."""
    name = resolve_arch(arch)
    if name in MIN_INPUT_SIZE:
        minimum: int | None = MIN_INPUT_SIZE[name]
    else:
        problem = _input_problem(name, crop)
        if problem is None:
            return
        minimum = _measured_min_input(name)
        if minimum is None or minimum <= crop:  # not a question of size (a fixed-size ViT)
            raise UsageError(f"--crop {crop} does not fit --arch {arch}: {problem}")
    if minimum is not None and crop < minimum:
        raise UsageError(
            f"--crop {crop} is too small for {arch}: it needs at least {minimum} px; "
            f"use --crop {minimum} or more"
        )


@functools.lru_cache(maxsize=2)
def _probe_model(name: str) -> nn.Module:
    """``name`` with 4 inputs and 28 outputs at eval, on the ``meta`` device if it can be built
    there (no memory, no arithmetic), else on the CPU."""
    import timm
    import torch

    kwargs: dict[str, Any] = {"pretrained": False, "in_chans": IN_CHANS}
    try:
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)
    except Exception:  # a model whose construction reads values: build it for real
        model = timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)
    return model.eval()


@functools.lru_cache(maxsize=64)
def _input_problem(name: str, size: int) -> str | None:
    """Why ``name`` cannot take a ``size``×``size`` input (its error, one line), or ``None``."""
    import torch

    model = _probe_model(name)
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, IN_CHANS, size, size, device=device))
    except Exception as exc:  # any failure of the forward pass is the answer
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return None


@functools.lru_cache(maxsize=16)
def _measured_min_input(name: str) -> int | None:
    """The smallest size in 1..``_PROBE_MAX`` that ``name`` takes, by binary search (every
    larger size is assumed to work too); ``None`` if ``_PROBE_MAX`` does not work."""
    if _input_problem(name, _PROBE_MAX) is not None:
        return None
    lo, hi = 1, _PROBE_MAX
    while lo < hi:
        mid = (lo + hi) // 2
        if _input_problem(name, mid) is None:
            hi = mid
        else:
            lo = mid + 1
    return lo
