"""The ResNet trunk: torchvision layout, weight loading, output sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoders.errors import ModelError
from encoders.profiles import PROFILES
from encoders.resnet import ResNetTrunk, load_trunk_weights


def test_resnet50_has_torchvision_parameter_count_and_names() -> None:
    trunk = ResNetTrunk(50, 64)
    # torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in fc.
    assert sum(p.numel() for p in trunk.parameters()) == 25_557_032 - 2_049_000
    state = trunk.state_dict()
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(state["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert "layer3.5.bn2.running_var" in state
    assert trunk.feature_dim == 2048 == PROFILES["production"].image_feature_dim


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_depths_pool_to_eight_times_width(depth: int) -> None:
    trunk = ResNetTrunk(depth, 8).eval()
    with torch.no_grad():
        assert trunk(torch.randn(2, 3, 64, 64)).shape == (2, 64)


def test_torchvision_style_state_dict_with_classifier_loads(tmp_path: Path) -> None:
    source = ResNetTrunk(18, 8)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 64), torch.zeros(1000)
    torch.save({"state_dict": state}, tmp_path / "weights.pth")
    target = ResNetTrunk(18, 8)
    load_trunk_weights(target, tmp_path / "weights.pth")
    assert torch.equal(target.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_safetensors_weights_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = ResNetTrunk(18, 8)
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    target = ResNetTrunk(18, 8)
    load_trunk_weights(target, tmp_path / "weights.safetensors")
    assert torch.equal(target.conv1.weight, source.conv1.weight)


@pytest.mark.parametrize("depth_width", [(34, 8), (18, 16)])
def test_wrong_architecture_is_rejected(tmp_path: Path, depth_width: tuple[int, int]) -> None:
    torch.save(ResNetTrunk(*depth_width).state_dict(), tmp_path / "weights.pth")
    with pytest.raises(ModelError) as info:
        load_trunk_weights(ResNetTrunk(18, 8), tmp_path / "weights.pth")
    assert info.value.reason == "weights_invalid"


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelError) as info:
        load_trunk_weights(ResNetTrunk(18, 8), tmp_path / "junk.pth")
    assert info.value.reason == "weights_invalid"
    with pytest.raises(ModelError) as info:
        load_trunk_weights(ResNetTrunk(18, 8), tmp_path / "absent.pth")
    assert info.value.reason == "model_not_found"
