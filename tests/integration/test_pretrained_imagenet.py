"""``train --pretrained imagenet``: timm's ImageNet weights taken from the Hugging Face cache
(nothing downloads: the weights are put where the loader looks), adapted to R, G, B, Y and
said so in one line; offline with an empty cache, one line saying how to get the file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.engine.models.factory import adapt_first_conv
from tests.support import REPO, SIZE, TRAIN, Invoke, register

#: A real timm architecture with ImageNet weights (the suite's quick ``ARCH`` has none).
ARCH = "resnet10t"
TAG = f"{ARCH}.c3_in1k"  # timm's default pretrained tag of resnet10t
URL = f"https://huggingface.co/timm/{TAG}/resolve/main/model.safetensors"
FAST = (
    *TRAIN,
    "--arch",
    ARCH,
    "--epochs",
    "1",
    "--max-steps",
    "1",
    "--lr",
    "1e-9",
    "--workers",
    "0",
)


def _train(
    home: Path, hf_home: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``hpatool train ARGS`` in a fresh process with its own (empty unless filled) Hugging
    Face and torch caches, offline (``HF_HUB_OFFLINE=1``): nothing can download."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HPATOOL_HOME=str(home),
        PYTHONPATH=str(REPO),
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(tmp_path / "torch-home"),
    )
    return subprocess.run(
        [sys.executable, "-m", "hpatool", "train", *args],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )


def _cache_imagenet_weights(hf_home: Path) -> dict[str, torch.Tensor]:
    """Seeded 3-channel, 1000-class weights of ``ARCH`` saved as huggingface_hub keeps a
    download of ``timm/TAG``'s ``model.safetensors``."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = timm.create_model(ARCH, pretrained=False, num_classes=1000).state_dict()
    folder = hf_home / "hub" / f"models--timm--{TAG}"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(folder / "snapshots" / commit / "model.safetensors"))
    return state


@pytest.mark.slow  # one short CPU run: about 10 s
def test_train_starts_from_cached_imagenet_weights(
    synth_data: Callable[..., Path],
    cli: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants

    register(cli, synth_data(24, SIZE, seed=1))
    source = _cache_imagenet_weights(tmp_path / "hf")
    # what HF_HOME=tmp_path/hf HF_HUB_OFFLINE=1 give a fresh process: whatever loads, loads from
    # that cache, through the real loader
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "runs"
    done = cli("train", "--dataset", "syn", *FAST, "--pretrained", "imagenet", "--out", out,
               "--name", "inet")  # fmt: skip
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.stderr.splitlines() if line.startswith("note: ")]
    loaded = sum(1 for k in source if not k.startswith("fc."))
    assert warnings == [
        f"note: --pretrained imagenet: loaded {loaded} tensors of the ImageNet weights of "
        f"{TAG}, first convolution adapted from 3 to 4 channels; its 1000-class head does not "
        "fit the 28 classes: the head was re-initialised"
    ], done.stderr
    # one step at a learning rate of 1e-9: the run's weights are still ImageNet's
    model = load_checkpoint(out / "inet" / "checkpoint-last.pt")["model"]
    conv = "conv1.0.weight"  # resnet10t's deep stem: its first convolution
    assert model[conv].shape[1] == 4
    assert torch.allclose(model[conv], adapt_first_conv(source[conv]), atol=1e-6)
    assert torch.allclose(model[conv][:, :3], source[conv], atol=1e-6)
    for key in ("layer1.0.conv1.weight", "layer4.0.conv2.weight"):
        assert torch.allclose(model[key], source[key], atol=1e-6), key
    assert model["fc.weight"].shape == (28, source["fc.weight"].shape[1])


@pytest.mark.slow  # a fresh process: the imports take most of its 5-15 s
def test_train_offline_without_cached_weights_is_one_line(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    register(cli, synth_data(24, SIZE, seed=1))
    started = time.monotonic()
    runs = str(tmp_path / "runs")
    done = _train(home, tmp_path / "empty-hf", tmp_path, "--dataset", "syn", *FAST,
                  "--pretrained", "imagenet", "--out", runs, "--name", "off")  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 1, (done.returncode, done.stderr)  # failed work, not bad usage
    assert done.stderr.strip() == (
        f"error: --pretrained imagenet: the ImageNet weights of {ARCH} ({URL}) are not in the "
        "local cache and cannot be downloaded: HF_HUB_OFFLINE is set; on a machine with "
        f"internet run curl -L -o {TAG}.safetensors {URL}, copy the file here and pass "
        f"--pretrained {TAG}.safetensors"
    )
    assert took < 60  # no retries, no waiting on the network (about 5 s: the imports)
    assert '"off"' not in cli("runs", "list", "--json").stdout  # refused before registering
