"""`vitrine model build`'s second half: torch towers -> ONNX files + manifest (torch only).

Five graphs, each with a dynamic batch axis: ``image.onnx`` (``pixels`` -> ``features``),
``text.onnx`` (``input_ids``, ``attention_mask`` -> ``features``, dynamic length too),
``fusion.onnx`` (``image_features``, ``text_features`` -> ``embedding``, ``mismatch``), and the
two heads into the shared image/title space, ``image_projection.onnx`` (``image_features`` ->
``shared``) and ``text_projection.onnx`` (``text_features`` -> ``shared``). The text model's
``tokenizer.json`` is copied beside them. After writing, the directory is loaded
with the serving runtime and compared with torch on the same inputs (parity).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.errors import ModelError
from encoders.fusion import FusionExport, ImageProjection, TextProjection
from encoders.manifest import Manifest, describe_file, version_from_files
from encoders.tokenize import TitleTokenizer
from encoders.towers import Towers

OPSET = 17
PARITY_MIN_COSINE = 0.9999
PARITY_TITLES = (
    "Canon EOS 5D Mark III body, 22MP, low shutter count",
    "Nike Air Max 90 men's size 10 white/red",
    "LEGO Technic 42115 Lamborghini Sián sealed",
    "vintage oak writing desk with three drawers",
    "",
)


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream and chatty about tracing; the
        # graphs here are static apart from the declared axes, and parity is checked after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def export_model(
    towers: Towers, out_dir: Path, training: dict[str, Any] | None = None, parity: bool = True
) -> Manifest:
    """Write the model directory and return its manifest (raises :class:`ModelError`)."""
    profile = towers.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    s = profile.image_size
    batch = {0: "batch"}
    _export(
        towers.trunk,
        (torch.randn(2, 3, s, s),),
        out_dir / "image.onnx",
        ["pixels"],
        ["features"],
        {"pixels": batch, "features": batch},
    )
    ids = torch.randint(1000, 2000, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    tokens = {0: "batch", 1: "tokens"}
    _export(
        towers.text,
        (ids, mask),
        out_dir / "text.onnx",
        ["input_ids", "attention_mask"],
        ["features"],
        {"input_ids": tokens, "attention_mask": tokens, "features": batch},
    )
    dims = (torch.randn(2, towers.trunk.feature_dim), torch.randn(2, towers.text.feature_dim))
    _export(
        FusionExport(towers.fusion),
        dims,
        out_dir / "fusion.onnx",
        ["image_features", "text_features"],
        ["embedding", "mismatch"],
        {"image_features": batch, "text_features": batch, "embedding": batch, "mismatch": batch},
    )
    for module, name, arg, feature in (
        (ImageProjection(towers.fusion), "image_projection.onnx", dims[0], "image_features"),
        (TextProjection(towers.fusion), "text_projection.onnx", dims[1], "text_features"),
    ):
        _export(module, (arg,), out_dir / name, [feature], ["shared"],
                {feature: batch, "shared": batch})  # fmt: skip
    shutil.copyfile(towers.tokenizer_file, out_dir / "tokenizer.json")
    files = {
        role: describe_file(out_dir, name)
        for role, name in (
            ("image", "image.onnx"),
            ("text", "text.onnx"),
            ("fusion", "fusion.onnx"),
            ("image_projection", "image_projection.onnx"),
            ("text_projection", "text_projection.onnx"),
            ("tokenizer", "tokenizer.json"),
        )
    }
    image_tower = (
        "EfficientNet-Lite0 (ImageNet-pretrained), global average pooling"
        if profile.backbone == "efficientnet_lite0"
        else f"ResNet-{profile.resnet_depth}, stem width {profile.resnet_width}"
    )
    manifest = Manifest(
        model_version=version_from_files(profile.name, files),
        profile=profile.name,
        embedding_dim=profile.embedding_dim,
        image_feature_dim=towers.trunk.feature_dim,
        text_feature_dim=towers.text.feature_dim,
        image=profile.image_spec(),
        max_title_tokens=profile.max_title_tokens,
        opset=OPSET,
        files=files,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        architecture={
            "image_tower": image_tower,
            "image_weights": towers.image_weights,
            "text_tower": f"BERT, {towers.text.config.num_hidden_layers} layers, mean pooling",
            "hidden_dim": profile.hidden_dim,
            "fusion": "adapters -> TransH hyperplane; item tower [a_i; a_t]; "
            "mismatch head(delta, a_i*a_t)",
        },
        shared_space={
            "dim": towers.fusion.shared_dim,
            "image": "image_projection",
            "text": "text_projection",
            "similarity": "cosine (outputs are unit vectors)",
            # Covers are [α s ; a] / √(1 + α²), text queries [0 ; a] (docs/model.md).
            "appearance_dim": towers.fusion.appearance_dim,
            "appearance_weight": (
                round(float(towers.fusion.appearance_weight), 6)
                if towers.fusion.appearance_dim
                else 0.0
            ),
        },
        training=training or {"trained": False},
    )
    manifest.write(out_dir)
    if parity:
        result = check_parity(out_dir, towers)
        cosines = [v for k, v in result.items() if k.endswith("min_cosine")]
        if min(cosines) < PARITY_MIN_COSINE:
            raise ModelError(f"ONNX Runtime disagrees with torch: {result}", reason="parity_failed")
        manifest = Manifest.from_dict(
            {**manifest.to_dict(), "training": {**manifest.training, "parity": result}}
        )
        manifest.write(out_dir)
    manifest.training.setdefault("export_seconds", round(time.monotonic() - started, 1))
    return manifest


def check_parity(model_dir: Path, towers: Towers, n: int = 5, seed: int = 0) -> dict[str, float]:
    """Serve ``model_dir`` with ONNX Runtime and compare with torch on the same inputs.

    Returns the minimum cosine between embeddings, each tower's features and each shared-space
    projection, and the largest absolute mismatch difference: every exported graph is covered.
    """
    from encoders.runtime import Encoder

    encoder = Encoder.load(model_dir, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    s = encoder.image_spec.size
    images = torch.randn(n, 3, s, s, generator=g)
    titles = [PARITY_TITLES[i % len(PARITY_TITLES)] for i in range(n)]
    got = encoder.encode(images.numpy(), titles)
    got_image = encoder.image_features(images.numpy())
    got_text = encoder.text_features(titles)
    got_shared_image = encoder.image_embedding(images.numpy())
    got_shared_text = encoder.text_embedding(titles)
    tokenizer = TitleTokenizer.from_file(
        model_dir / "tokenizer.json", encoder.manifest.max_title_tokens
    )
    ids, mask = tokenizer(titles)
    for module in (towers.trunk, towers.text, towers.fusion):
        module.eval()
    with torch.no_grad():
        ref_image = towers.trunk(images)
        ref_text = towers.text(torch.from_numpy(ids), torch.from_numpy(mask))
        ref_emb, ref_mismatch = FusionExport(towers.fusion)(ref_image, ref_text)
        ref_shared_image = ImageProjection(towers.fusion)(ref_image)
        ref_shared_text = TextProjection(towers.fusion)(ref_text)

    def min_cos(a: np.ndarray, b: np.ndarray) -> float:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float((a * b).sum(1).min())

    return {
        "min_cosine": min_cos(got.embeddings, ref_emb.numpy()),
        "image_min_cosine": min_cos(got_image, ref_image.numpy()),
        "text_min_cosine": min_cos(got_text, ref_text.numpy()),
        "mismatch_max_abs_diff": float(np.abs(got.mismatch - ref_mismatch.numpy()).max()),
        "image_projection_min_cosine": min_cos(got_shared_image, ref_shared_image.numpy()),
        "text_projection_min_cosine": min_cos(got_shared_text, ref_shared_text.numpy()),
    }
