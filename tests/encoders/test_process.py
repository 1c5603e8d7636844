"""The towers in a child process: same results as in-process, clear errors, a dead child
replaced, nothing left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import ModelError
from encoders.process import EncoderProcess, open_encoder
from encoders.runtime import Encoder


def _batch(size: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.fixture
def towers(tiny_model):
    process = EncoderProcess(tiny_model.directory, capacity=4)
    yield process
    process.close()


def test_results_equal_the_in_process_encoder(tiny_model, towers: EncoderProcess) -> None:
    local = Encoder.load(tiny_model.directory)
    images = _batch(local.image_spec.size, 10)  # above the capacity of 4: three calls
    titles = [f"listing {i} with a longer title" for i in range(10)]
    expected, got = local.encode(images, titles), towers.encode(images, titles)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
    np.testing.assert_allclose(got.mismatch, expected.mismatch, atol=1e-6)
    if expected.image_vectors is None:
        assert got.image_vectors is None
    else:
        np.testing.assert_allclose(got.image_vectors, expected.image_vectors, atol=1e-6)
    assert towers.manifest.model_version == local.manifest.model_version
    assert towers.has_shared_space == local.has_shared_space
    assert towers.providers == local.providers


def test_empty_batch(towers: EncoderProcess) -> None:
    result = towers.encode(_batch(towers.image_spec.size, 0), [])
    assert result.embeddings.shape == (0, towers.manifest.embedding_dim)


def test_bad_input_is_refused_with_a_reason(towers: EncoderProcess) -> None:
    with pytest.raises(ModelError) as refused:
        towers.encode(np.zeros((2, 3, 7, 7), np.float32), ["a", "b"])
    assert refused.value.reason == "bad_input"
    with pytest.raises(ModelError) as refused:
        towers.encode(_batch(towers.image_spec.size, 2), ["only one title"])
    assert refused.value.reason == "bad_input"


def test_a_dead_child_fails_the_call_in_flight_and_is_replaced(towers: EncoderProcess) -> None:
    images, titles = _batch(towers.image_spec.size, 2), ["a", "b"]
    first = towers._process.pid
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ModelError) as died:
        towers.encode(images, titles)
    assert died.value.reason == "encoder_process_died"
    result = towers.encode(images, titles)  # a new child
    assert result.embeddings.shape[0] == 2
    assert towers._process.pid != first


def test_close_stops_the_child_and_frees_the_block(tiny_model) -> None:
    towers = EncoderProcess(tiny_model.directory, capacity=2)
    child, block = towers._process, towers._block.name
    towers.close()
    assert not child.is_alive()
    assert not Path("/dev/shm", block.lstrip("/")).exists()


def test_a_model_the_child_cannot_load_fails_at_start(tiny_model, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    for item in Path(tiny_model.directory).iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    image_graph = next(p for p in broken.iterdir() if p.suffix == ".onnx")
    image_graph.write_bytes(b"not a graph")
    with pytest.raises(ModelError) as refused:
        EncoderProcess(broken)
    assert refused.value.reason == "checksum_mismatch"


def test_open_encoder_chooses_the_process_or_this_one(tiny_model) -> None:
    local = open_encoder(tiny_model.directory, own_process=False)
    assert isinstance(local, Encoder)
    remote = open_encoder(tiny_model.directory, own_process=True, capacity=2)
    try:
        assert isinstance(remote, EncoderProcess)
    finally:
        remote.close()
