"""``--pretrained imagenet``: timm's default pretrained weights of an architecture (e.g.
``resnet50.a1_in1k``, ``inception_resnet_v2.tf_in1k``) as a 3-channel state dict, for
``hpatool.engine.models.factory.create_model`` to adapt like a local file.

``imagenet_state_dict`` takes them from the Hugging Face cache (``$HF_HOME/hub``) or torch's
hub cache, else downloads them once with timm's own machinery. Offline with no cached copy it
fails at once (no retries) with one line giving the file's URL, a ``curl`` command to fetch it
elsewhere and the ``--pretrained PATH`` to pass. It is the one function here that may touch the
network: tests patch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool.errors import DataError, UsageError, WorkFailed

if TYPE_CHECKING:
    import torch

#: Seconds to wait for the weights' host to answer before calling it offline.
CONNECT_TIMEOUT_S = 5.0


def _pretrained_cfg(timm_name: str) -> Any:
    """timm's default pretrained config of ``timm_name``, or ``None`` if it has no weights."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    return cfg


def imagenet_tag(timm_name: str) -> str:
    """``name.tag`` of timm's default pretrained weights for ``timm_name`` (``resnet50`` ->
    ``resnet50.a1_in1k``); a ``UsageError`` if timm has none."""
    cfg = _pretrained_cfg(timm_name)
    if cfg is None:
        raise UsageError(
            f"--pretrained imagenet: timm has no pretrained weights for --arch {timm_name}; "
            "pick an --arch that has (python -c 'import timm; print(timm.list_pretrained())') "
            "or give a weight file with --pretrained PATH"
        )
    return f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)


def _weight_sources(cfg: Any) -> tuple[list[str], str]:
    """The Hugging Face file names timm would try for ``cfg`` (in its order), and the URL of
    the file to name in the offline hint."""
    if cfg.hf_hub_id:
        repo = str(cfg.hf_hub_id).split("@")[0]
        filename = cfg.hf_hub_filename or "pytorch_model.bin"
        names = [filename]
        if filename.endswith(".bin"):
            safe = (
                "model.safetensors"
                if filename == "pytorch_model.bin"
                else filename[:-4] + ".safetensors"
            )
            names.insert(0, safe)
        from huggingface_hub import constants

        return names, f"{constants.ENDPOINT}/{repo}/resolve/main/{names[0]}"
    return [], str(cfg.url)


def _cached_weights(cfg: Any) -> str | None:
    """A local copy of ``cfg``'s weights (the HF cache, torch's hub cache, a ``file``)."""
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    names, _ = _weight_sources(cfg)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = str(cfg.hf_hub_id).partition("@")
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return found
    if cfg.url:
        import os
        from urllib.parse import urlparse

        import torch

        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if local.is_file():
            return str(local)
    return None


def _offline_reason(url: str) -> str | None:
    """Why ``url``'s host cannot be reached now (offline mode, no DNS, no connection within
    ``CONNECT_TIMEOUT_S``), or ``None`` if it can (or a proxy decides)."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"


def _unavailable(timm_name: str, tag: str, url: str, reason: str) -> WorkFailed:
    """The weights cannot be had here: failed work (exit 1), not bad usage."""
    filename = f"{tag}{Path(url.split('?')[0]).suffix or '.pth'}"
    return WorkFailed(
        f"--pretrained imagenet: the ImageNet weights of {timm_name} ({url}) are not in the "
        f"local cache and cannot be downloaded: {reason}; on a machine with internet run "
        f"curl -L -o {filename} {url}, copy the file here and pass --pretrained {filename}"
    )


def imagenet_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The 3-channel state dict of timm's default pretrained weights for ``timm_name`` (with
    its ImageNet head), as timm loads them (its checkpoint filters applied): from the local
    cache, else downloaded once by timm into the Hugging Face / torch hub cache.

    ``UsageError`` if timm has no weights for the name; ``WorkFailed`` (exit 1, one line: the URL, a
    ``curl`` command, the ``--pretrained PATH`` to pass) if there is no cached copy and the host
    cannot be reached (checked first, within ``CONNECT_TIMEOUT_S``) or the download fails.
    The one function tests patch: nothing else here touches the network.
    """
    import timm
    import torch

    tag = imagenet_tag(timm_name)
    cfg = _pretrained_cfg(timm_name)
    cached = _cached_weights(cfg)
    _, url = _weight_sources(cfg)
    overlay: dict[str, Any] = {}
    if cached is not None:
        overlay = {"file": cached, "source": "", "hf_hub_id": None, "url": None}
    else:
        reason = _offline_reason(url)
        if reason is not None:
            raise _unavailable(timm_name, tag, url, reason)
    # the throw-away 3-channel model's random init must not move the caller's seeded RNG
    with torch.random.fork_rng(devices=[]):
        try:
            model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay)
        except Exception as exc:  # any download failure: the same hint, with timm's reason
            if cached is not None:
                raise DataError(
                    f"--pretrained imagenet: the cached weights {cached} of {tag} do not load "
                    f"({type(exc).__name__}); delete the file to download it again"
                ) from None
            text = " ".join(str(exc).split())[:200]
            raise _unavailable(timm_name, tag, url, f"{type(exc).__name__}: {text}") from None
    return dict(model.state_dict())
