"""create_model: aliases, 4 channels / 28 outputs, 3-channel weight adaptation, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpatool.engine.models.factory import (
    PretrainedWeights,
    adapt_first_conv,
    closest_archs,
    create_model,
    first_conv_name,
    resolve_arch,
)
from hpatool.engine.models.input_size import MIN_INPUT_SIZE, check_input_size, min_input_size
from hpatool.errors import DataError, NotFound, UsageError, WorkFailed


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
    with pytest.warns(PretrainedWeights, match="1000-class head does not fit"):
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
    with pytest.warns(PretrainedWeights, match="adapted from 3 to 4 channels"):
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


def test_unknown_arch_suggests_the_closest_names() -> None:
    with pytest.raises(UsageError) as info:
        resolve_arch("inception_resnetv2")
    text = str(info.value)
    near = text.split("did you mean ")[1].split("?")[0].split(", ")
    assert near[:2] == ["inception_resnet_v2", "inceptionresnetv2"], text
    with pytest.raises(UsageError, match=r"did you mean resnet50, "):
        resolve_arch("resnt50")
    with pytest.raises(UsageError) as info:
        resolve_arch("qqqqqq")
    assert "did you mean" not in str(info.value)  # nothing close: no guesses
    assert resolve_arch("ResNet18") == "resnet18"  # timm names in any case
    assert closest_archs("efficientnet_b9")[0].startswith("efficientnet_b")


def _save_checkpoint(path: Path, model: torch.nn.Module, arch: str, timm_name: str) -> Path:
    """A checkpoint as ``hpatool train`` writes it (the keys ``load_pretrained`` reads)."""
    from hpatool.engine.models.checkpoint import save_checkpoint

    save_checkpoint(
        path,
        {
            "arch": arch,
            "timm_name": timm_name,
            "model": model.state_dict(),
            "optimizer": {},
            "epoch": 3,
            "config": {"options": {"name": "r18-f0", "arch": arch}},
        },
    )
    return path


def test_pretrained_run_checkpoint_keeps_the_28_class_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = create_model("resnet18")
    path = _save_checkpoint(tmp_path / "checkpoint-best.pt", trained, "resnet18", "resnet18")
    torch.manual_seed(2)
    with pytest.warns(PretrainedWeights) as caught:
        model = create_model("resnet18", pretrained=path)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key  # head included
    (line,) = [str(w.message) for w in caught]
    assert f"--pretrained {path}: loaded " in line and "run 'r18-f0'" in line
    assert "epoch 3" in line and "classifier head was kept" in line and "\n" not in line
    # another architecture's checkpoint is refused, naming the --arch it needs
    with pytest.raises(DataError, match=r"checkpoint of --arch resnet18 \(resnet18\), not --arch"):
        create_model("resnet34", pretrained=path)


def test_pretrained_four_channel_state_dict_keeps_a_matching_head(tmp_path: Path) -> None:
    source = create_model("resnet18").state_dict()  # 4 channels, 28 classes, no wrapper
    path = tmp_path / "r18-hpa.pth"
    torch.save(source, path)
    with pytest.warns(PretrainedWeights, match="classifier head was kept") as caught:
        model = create_model("resnet18", pretrained=path)
    assert torch.equal(model.state_dict()["fc.weight"], source["fc.weight"])
    assert "adapted" not in str(caught[0].message)
    # a 28-class head on another class count: re-initialised, and said so
    with pytest.warns(PretrainedWeights, match="its 28-class head does not fit the 5 classes"):
        other = create_model("resnet18", num_classes=5, pretrained=path)
    assert other.state_dict()["fc.weight"].shape == (5, 512)


def test_pretrained_imagenet_file_says_the_head_was_reinitialised(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet18", pretrained=False).state_dict()  # 3 ch, 1000 classes
    path = tmp_path / "r18-imagenet.pth"
    torch.save(source, path)
    torch.manual_seed(0)
    fresh = create_model("resnet18").state_dict()["fc.weight"]
    torch.manual_seed(0)
    with pytest.warns(PretrainedWeights) as caught:
        model = create_model("resnet18", pretrained=path)
    (line,) = [str(w.message) for w in caught]
    assert "first convolution adapted from 3 to 4 channels" in line
    assert "its 1000-class head does not fit the 28 classes: the head was re-initialised" in line
    assert torch.equal(model.state_dict()["fc.weight"], fresh)  # the seeded new head
    headless = tmp_path / "r18-headless.pth"
    torch.save({k: v for k, v in source.items() if not k.startswith("fc.")}, headless)
    with pytest.warns(PretrainedWeights, match="it has no head for the 28 classes"):
        create_model("resnet18", pretrained=headless)


def test_crop_below_the_minimum_is_one_line_naming_it() -> None:
    with pytest.raises(UsageError) as info:
        check_input_size("inceptionresnetv2", 64)
    assert str(info.value) == (
        "--crop 64 is too small for inceptionresnetv2: it needs at least 75 px; "
        "use --crop 75 or more"
    )
    check_input_size("inceptionresnetv2", 75)
    check_input_size("resnet50", 8)
    assert min_input_size("inceptionresnetv2") == 75 and min_input_size("resnet50") == 1
    with pytest.raises(UsageError, match="unknown --arch"):
        check_input_size("resnet5O", 256)


def test_input_size_of_other_archs_is_measured() -> None:
    # convnext_atto is in no table: one forward pass says 256 fits; 16 does not
    check_input_size("convnext_atto", 256)
    with pytest.raises(UsageError, match="too small for convnext_atto: it needs at least 32 px"):
        check_input_size("convnext_atto", 16)
    # a fixed-size model: not a question of a minimum, its own reason is given
    with pytest.raises(UsageError) as info:
        check_input_size("vit_tiny_patch16_224", 256)
    text = str(info.value)
    assert (
        text.startswith("--crop 256 does not fit --arch vit_tiny_patch16_224: ") and "224" in text
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MIN_INPUT_SIZE))
def test_min_input_size_table_is_true(name: str) -> None:
    """The table's minimum works and one pixel less does not (a real forward pass at eval)."""
    minimum = MIN_INPUT_SIZE[name]
    model = timm_model(name)
    with torch.no_grad():
        assert model(torch.zeros(2, 4, minimum, minimum)).shape == (2, 28)
        if minimum > 1:
            with pytest.raises(RuntimeError):
                model(torch.zeros(2, 4, minimum - 1, minimum - 1))


def timm_model(name: str) -> torch.nn.Module:
    return create_model(name).eval()


# ------------------------------------------------------------------------ --pretrained imagenet


def _imagenet_like(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """What timm's ImageNet weights of ``name`` look like: 3 channels, 1000 classes, seeded."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=1000).state_dict()


@pytest.mark.parametrize(
    ("arch", "timm_name", "tag", "conv"),
    [
        ("resnet50", "resnet50", "resnet50.a1_in1k", "conv1.weight"),
        (
            "inceptionresnetv2",
            "inception_resnet_v2",
            "inception_resnet_v2.tf_in1k",
            "conv2d_1a.conv.weight",
        ),
    ],
)
def test_imagenet_weights_are_adapted_to_four_channels(
    monkeypatch: pytest.MonkeyPatch, arch: str, timm_name: str, tag: str, conv: str
) -> None:
    import hpatool.engine.models.imagenet

    source = _imagenet_like(timm_name)
    asked: list[str] = []

    def fake_download(name: str) -> dict[str, torch.Tensor]:
        asked.append(name)
        return dict(source)

    monkeypatch.setattr(hpatool.engine.models.imagenet, "imagenet_state_dict", fake_download)
    torch.manual_seed(0)
    fresh_head = create_model(arch).state_dict()
    torch.manual_seed(0)
    with pytest.warns(PretrainedWeights) as caught:
        model = create_model(arch, pretrained="imagenet")
    assert asked == [timm_name]
    state = model.state_dict()
    w = source[conv]
    assert torch.equal(state[conv], adapt_first_conv(w))  # R, G, B copied; Y = (R + G) / 2
    assert torch.equal(state[conv][:, :3], w)
    head = {k for k in source if tuple(source[k].shape)[:1] == (1000,)}
    for key, value in source.items():
        if key != conv and key not in head:
            assert torch.equal(state[key], value), key  # the whole backbone is ImageNet's
    for key in head:
        assert state[key].shape[0] == 28 and torch.equal(state[key], fresh_head[key]), key
    loaded = sum(1 for k in source if k not in head)
    (line,) = [str(w.message) for w in caught]
    assert line == (
        f"--pretrained imagenet: loaded {loaded} tensors of the ImageNet weights of {tag}, "
        "first convolution adapted from 3 to 4 channels; its 1000-class head does not fit the "
        "28 classes: the head was re-initialised"
    )


def _put_in_hf_cache(hub: Path, repo: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` saved where ``huggingface_hub`` keeps a downloaded file of ``repo``."""
    from safetensors.torch import save_file

    folder = hub / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_imagenet_weights_come_from_the_hf_cache_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from huggingface_hub import constants

    from hpatool.engine.models.imagenet import imagenet_state_dict

    source = _imagenet_like("resnet18", seed=3)
    _put_in_hf_cache(tmp_path / "hub", "timm/resnet18.a1_in1k", "model.safetensors", source)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    state = imagenet_state_dict("resnet18")  # the real loader, through timm
    assert state.keys() == source.keys()
    assert all(torch.equal(state[k], v) for k, v in source.items())
    torch.manual_seed(0)
    fresh_head = create_model("resnet18").state_dict()["fc.weight"]
    torch.manual_seed(0)
    with pytest.warns(PretrainedWeights, match="ImageNet weights of resnet18.a1_in1k"):
        model = create_model("resnet18", pretrained="imagenet")
    assert torch.equal(model.state_dict()["conv1.weight"], adapt_first_conv(source["conv1.weight"]))
    # building timm's 3-channel model to load them into did not move the seeded RNG
    assert torch.equal(model.state_dict()["fc.weight"], fresh_head)


def test_imagenet_offline_is_one_line_and_its_file_loads_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from hpatool.engine.models.imagenet import imagenet_state_dict

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    url = "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors"
    with pytest.raises(WorkFailed) as info:
        imagenet_state_dict("resnet18")
    assert str(info.value) == (
        f"--pretrained imagenet: the ImageNet weights of resnet18 ({url}) are not in the local "
        "cache and cannot be downloaded: HF_HUB_OFFLINE is set; on a machine with internet run "
        f"curl -L -o resnet18.a1_in1k.safetensors {url}, copy the file here and pass "
        "--pretrained resnet18.a1_in1k.safetensors"
    )
    with pytest.raises(WorkFailed):  # the same through create_model, before it builds anything
        create_model("resnet18", pretrained="imagenet")
    # the file the hint names (timm's hub file: a plain safetensors state dict) loads as a PATH,
    # and so does the older pytorch_model.bin
    from safetensors.torch import save_file

    source = _imagenet_like("resnet18", seed=4)
    fetched = tmp_path / "resnet18.a1_in1k.safetensors"
    save_file(source, str(fetched))
    with pytest.warns(PretrainedWeights, match="adapted from 3 to 4 channels"):
        model = create_model("resnet18", pretrained=fetched)
    assert torch.equal(model.state_dict()["conv1.weight"], adapt_first_conv(source["conv1.weight"]))
    binary = tmp_path / "pytorch_model.bin"
    torch.save(source, binary)
    with pytest.warns(PretrainedWeights, match="1000-class head does not fit"):
        create_model("resnet18", pretrained=binary)
    broken = tmp_path / "truncated.safetensors"
    broken.write_bytes(fetched.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a readable safetensors file"):
        create_model("resnet18", pretrained=broken)


def test_arch_without_imagenet_weights_is_one_line() -> None:
    with pytest.raises(UsageError) as info:
        create_model("resnet200", pretrained="imagenet")  # timm's only tag: "untrained"
    assert str(info.value) == (
        "--pretrained imagenet: timm has no pretrained weights for --arch resnet200; pick an "
        "--arch that has (python -c 'import timm; print(timm.list_pretrained())') or give a "
        "weight file with --pretrained PATH"
    )
