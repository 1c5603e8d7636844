"""ONNX export: parity with torch, dynamic axes, and what the build records."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from encoders.export import PARITY_MIN_COSINE, check_parity
from encoders.manifest import Manifest


def test_onnx_runtime_matches_torch(tiny_model) -> None:
    result = check_parity(tiny_model.directory, tiny_model.towers, n=6, seed=3)
    assert result["min_cosine"] >= PARITY_MIN_COSINE
    assert result["image_min_cosine"] >= PARITY_MIN_COSINE
    assert result["text_min_cosine"] >= PARITY_MIN_COSINE
    assert result["mismatch_max_abs_diff"] < 1e-4
    assert result["image_projection_min_cosine"] >= PARITY_MIN_COSINE
    assert result["text_projection_min_cosine"] >= PARITY_MIN_COSINE


def test_pretrained_efficientnet_model_exports_with_parity(tmp_path, tiny_bert_dir) -> None:
    """The cpu profile's image graph (EfficientNet-Lite0, real weights) at a small input size."""
    from dataclasses import replace

    from encoders.export import export_model
    from encoders.profiles import get_profile
    from encoders.towers import build_towers

    profile = replace(get_profile("cpu"), name="tiny", image_size=64, resize=72, hidden_dim=32)
    towers = build_towers(profile, str(tiny_bert_dir), None)
    manifest = export_model(towers, tmp_path)
    parity = manifest.training["parity"]
    assert min(v for k, v in parity.items() if k.endswith("min_cosine")) >= PARITY_MIN_COSINE
    assert manifest.image_feature_dim == 1280
    assert manifest.image.mean == profile.pixel_mean_std[0]
    assert manifest.architecture["image_weights"]["sha256"] == towers.image_weights["sha256"]


def test_build_records_parity_in_the_manifest(tiny_model) -> None:
    parity = Manifest.read(tiny_model.directory).training["parity"]
    keys = {"min_cosine", "image_min_cosine", "text_min_cosine", "mismatch_max_abs_diff"}
    assert keys <= set(parity)


@pytest.mark.parametrize(
    ("name", "inputs"),
    [
        ("image.onnx", ["pixels"]),
        ("text.onnx", ["input_ids", "attention_mask"]),
        ("fusion.onnx", ["image_features", "text_features"]),
        ("image_projection.onnx", ["image_features"]),
        ("text_projection.onnx", ["text_features"]),
    ],
)
def test_graphs_have_a_dynamic_batch_axis(tiny_model, name: str, inputs: list[str]) -> None:
    graph = onnx.load(str(tiny_model.directory / name)).graph
    assert [i.name for i in graph.input] == inputs
    for value in [*graph.input, *graph.output]:
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.dim_value


def test_long_and_odd_batches_run(tiny_model) -> None:
    from encoders.runtime import Encoder

    encoder = Encoder.load(tiny_model.directory)
    s = encoder.image_spec.size
    titles = ["word " * 200, "x", "y"]  # the first is truncated to max_title_tokens
    result = encoder.encode(np.zeros((3, 3, s, s), np.float32), titles)
    assert np.isfinite(result.embeddings).all()


def test_shared_space_vectors_have_the_width_the_manifest_declares(tiny_model) -> None:
    from encoders.runtime import Encoder

    encoder = Encoder.load(tiny_model.directory)
    s = encoder.image_spec.size
    covers = encoder.image_embedding(np.random.default_rng(0).normal(size=(2, 3, s, s)))
    queries = encoder.text_embedding(["red leather handbag"])
    dim = encoder.manifest.shared_space["dim"]
    assert covers.shape == (2, dim) and queries.shape == (1, dim)
    appearance = encoder.manifest.shared_space["appearance_dim"]
    # A text query carries nothing in the appearance block.
    assert appearance > 0 and np.all(queries[:, :appearance] == 0)
