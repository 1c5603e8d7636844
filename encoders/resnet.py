"""Image tower: a compact ResNet-18/34/50 trunk in torchvision's state-dict layout (torch only).

Parameter names match ``torchvision.models.resnet*`` so that a user-supplied torchvision
ResNet-50 state dict loads unchanged (its ``fc.*`` classifier is ignored: the tower's output is
the global-average-pooled feature, 2048-d for ResNet-50 at the standard width). The stem width
is a parameter so the ``cpu`` profile can run a thin ResNet-18 on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.errors import ModelError

_LAYOUT = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand (ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetTrunk(nn.Module):
    """ResNet without its classifier: ``[N,3,H,W]`` normalised pixels -> ``[N, feature_dim]``."""

    def __init__(self, depth: int = 50, width: int = 64) -> None:
        super().__init__()
        if depth not in _LAYOUT:
            raise ModelError(f"unsupported ResNet depth {depth}", reason="bad_input")
        kind, blocks = _LAYOUT[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = width
        stages: list[nn.Sequential] = []
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            layers: list[nn.Module] = []
            for i in range(count):
                downsample = None
                if i == 0 and (stride != 1 or cin != planes * block.expansion):
                    downsample = nn.Sequential(
                        _conv1x1(cin, planes * block.expansion, stride),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                layers.append(block(cin, planes, stride if i == 0 else 1, downsample))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero-init the last BN of each residual branch: each block starts as the identity,
        # which makes training from scratch on small data noticeably steadier.
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the first three stages."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage and global average pooling."""
        return torch.flatten(self.avgpool(self.layer4(x)), 1)

    def tail_modules(self) -> list[nn.Module]:
        """The modules :meth:`tail` trains when the last stage is fine-tuned."""
        return [self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))


def load_trunk_weights(trunk: ResNetTrunk, path: Path) -> None:
    """Load a torchvision-layout state dict (``.pth``/``.pt`` or ``.safetensors``) into ``trunk``.

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``,
    with or without a ``module.`` prefix. The classifier (``fc.*``) is dropped. Any other missing
    or unexpected key, or a shape mismatch, is a :class:`ModelError` (``weights_invalid``).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such weights file: {path}", reason="model_not_found")
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many unrelated types
        raise ModelError(f"cannot read weights {path}: {exc}", reason="weights_invalid") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state dict", reason="weights_invalid")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    state = {k: v for k, v in state.items() if not k.startswith("module.fc.")}
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit a ResNet-{trunk.depth} trunk: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}",
            reason="weights_invalid",
        )
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ModelError(
            f"{path}: shape mismatch for {bad[:5]} (a different depth or width?)",
            reason="weights_invalid",
        )
    trunk.load_state_dict(state)
