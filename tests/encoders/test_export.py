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
