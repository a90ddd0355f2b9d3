"""create_model: aliases, 4 channels / 28 outputs, 3-channel weight adaptation, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpatool.errors import DataError, NotFound, UsageError
from hpatool.models import adapt_first_conv, create_model, first_conv_name, resolve_arch


def test_aliases_resolve_to_timm_names() -> None:
    assert resolve_arch("resnet50") == "resnet50"
    assert resolve_arch("inceptionresnetv2") == "inception_resnet_v2"
    assert resolve_arch("resnet18") == "resnet18"  # any timm name passes through


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        resolve_arch("resnet5O")
    text = str(info.value)
    assert "'resnet5O'" in text and "resnet50" in text and "inceptionresnetv2" in text
    assert "timm.list_models" in text and "\n" not in text


@pytest.mark.parametrize(("arch", "size"), [("resnet50", 64), ("inceptionresnetv2", 75)])
def test_four_channels_and_28_outputs(arch: str, size: int) -> None:
    model = create_model(arch).eval()
    conv = dict(model.named_modules())[first_conv_name(model)]
    assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 4
    with torch.no_grad():
        out = model(torch.randn(2, 4, size, size))
    assert out.shape == (2, 28)


def test_adapt_first_conv_rule() -> None:
    w = torch.randn(8, 3, 7, 7)
    a = adapt_first_conv(w)
    assert a.shape == (8, 4, 7, 7)
    assert torch.equal(a[:, :3], w)
    assert torch.allclose(a[:, 3], (w[:, 0] + w[:, 1]) / 2)
    assert torch.equal(adapt_first_conv(a), a)  # already 4 channels: unchanged


def test_pretrained_torchvision_resnet50_file_is_adapted(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.resnet50().state_dict()  # 3 channels, 1000 classes
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(source, path)
    model = create_model("resnet50", pretrained=path)
    state = model.state_dict()
    w = source["conv1.weight"]
    assert torch.equal(state["conv1.weight"][:, :3], w)
    assert torch.allclose(state["conv1.weight"][:, 3], (w[:, 0] + w[:, 1]) / 2)
    assert torch.equal(state["layer3.2.conv2.weight"], source["layer3.2.conv2.weight"])
    assert torch.equal(state["bn1.running_var"], source["bn1.running_var"])
    assert state["fc.weight"].shape == (28, 2048)  # the head stays new


def test_pretrained_timm_file_wrapped_with_module_prefix(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)
    model = create_model("resnet18", pretrained=path)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    assert torch.equal(model.state_dict()["conv1.weight"][:, :3], source["conv1.weight"])


def test_bad_weight_files_are_one_line_errors(tmp_path: Path) -> None:
    import timm

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(DataError, match="not a readable PyTorch state dict"):
        create_model("resnet18", pretrained=garbage)
    other = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), other)
    with pytest.raises(DataError) as info:
        create_model("resnet18", pretrained=other)
    assert "does not fit --arch resnet18" in str(info.value) and "\n" not in str(info.value)
    not_a_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(DataError, match="not a state dict"):
        create_model("resnet18", pretrained=not_a_dict)
    with pytest.raises(NotFound, match="no such file"):
        create_model("resnet18", pretrained=tmp_path / "missing.pth")
    assert create_model("resnet18", pretrained="none") is not None
