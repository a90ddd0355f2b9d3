"""What a run was made with, recorded in its ``config.json`` (``"provenance"``) and shown by
``runs show``: the hpatool, torch, timm, numpy and Python versions, the git commit of the
project when hpatool runs from a checkout (and whether that checkout had changes), the device
(with the GPU's name), and the sha256 of a ``--pretrained`` weight file."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from hpatool._io import sha256_of

#: The checkout hpatool runs from, if it does (``hpatool/`` is directly inside it).
_REPO = Path(__file__).resolve().parents[2]


def provenance(pretrained: str | None, device: Any) -> dict[str, Any]:
    """The provenance of a run about to train on ``device`` from ``--pretrained``."""
    import numpy
    import timm
    import torch

    import hpatool

    doc: dict[str, Any] = {
        "hpatool": hpatool.__version__,
        "torch": str(torch.__version__),  # a TorchVersion: not loadable with weights_only
        "timm": str(timm.__version__),
        "numpy": str(numpy.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "git": git_commit(),
        "device": str(device),
    }
    if getattr(device, "type", None) == "cuda":
        doc["gpu"] = torch.cuda.get_device_name(device)
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
        doc["pretrained"] = {"file": str(path.resolve()), "sha256": sha256_of(path)}
    elif pretrained is not None:
        doc["pretrained"] = {"name": pretrained}
    return doc


def git_commit(repo: Path = _REPO) -> dict[str, Any] | None:
    """``{"commit": SHA, "dirty": bool}`` of the checkout hpatool runs from; ``None`` when it is
    installed from a wheel, git is missing, or the folder is not a git checkout."""
    if not (repo / ".git").exists() or not (repo / "hpatool").is_dir():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None
