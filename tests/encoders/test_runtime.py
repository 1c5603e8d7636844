"""The serving runtime: loading, encoding, providers, and life without torch."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from encoders import runtime
from encoders.errors import ModelError
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder, choose_providers


def _batch(encoder: Encoder, n: int, seed: int = 0) -> np.ndarray:
    s = encoder.image_spec.size
    return np.random.default_rng(seed).standard_normal((n, 3, s, s)).astype(np.float32)


def test_encode_returns_unit_embeddings_and_probabilities(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory)
    result = encoder.encode(_batch(encoder, 3), ["red car", "blue sneaker, size 42", ""])
    assert result.embeddings.shape == (3, encoder.manifest.embedding_dim)
    assert result.embeddings.dtype == np.float32 and result.mismatch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert result.mismatch.shape == (3,)
    assert ((result.mismatch >= 0) & (result.mismatch <= 1)).all()
    assert encoder.providers == ["CPUExecutionProvider"]


def test_encode_of_preprocessed_image_bytes(tiny_model, jpeg_bytes: bytes) -> None:
    encoder = Encoder.load(tiny_model.directory)
    pixels = preprocess_image(jpeg_bytes, encoder.image_spec)
    result = encoder.encode(pixels[None], ["a red thing"])
    assert result.embeddings.shape == (1, encoder.manifest.embedding_dim)


def test_batch_results_do_not_depend_on_batch_composition(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory)
    images = _batch(encoder, 4)
    titles = ["a", "much longer title with many words in it", "c", "d"]
    whole = encoder.encode(images, titles)
    one = encoder.encode(images[1:2], titles[1:2])
    np.testing.assert_allclose(whole.embeddings[1], one.embeddings[0], atol=1e-5)
    np.testing.assert_allclose(whole.mismatch[1], one.mismatch[0], atol=1e-5)


def test_empty_batch(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory)
    result = encoder.encode(_batch(encoder, 0), [])
    assert result.embeddings.shape == (0, encoder.manifest.embedding_dim)
    assert result.mismatch.shape == (0,)


@pytest.mark.parametrize(
    ("shape", "titles"),
    [((2, 3, 8, 8), ["a", "b"]), ((2, 3, 64, 64), ["a"]), ((3, 64, 64), ["a"])],
)
def test_bad_input_is_a_model_error(tiny_model, shape, titles) -> None:
    encoder = Encoder.load(tiny_model.directory)
    with pytest.raises(ModelError) as info:
        encoder.encode(np.zeros(shape, np.float32), titles)
    assert info.value.reason == "bad_input"


def test_concurrent_encode_calls_agree(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory, intra_op_threads=1)
    images = _batch(encoder, 2)
    expected = encoder.encode(images, ["x", "y"]).embeddings
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: encoder.encode(images, ["x", "y"]).embeddings, range(8)))
    assert all(np.allclose(r, expected, atol=1e-6) for r in results)


def test_choose_providers_keeps_order_and_ends_with_cpu() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, available) == available
    assert choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert choose_providers(wanted, available) == available
    assert choose_providers(["CPUExecutionProvider"], available) == ["CPUExecutionProvider"]


def test_unavailable_provider_falls_back_to_cpu(tiny_model, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="encoders.runtime"):
        encoder = Encoder.load(tiny_model.directory, providers=["CUDAExecutionProvider"])
    assert encoder.providers == ["CPUExecutionProvider"]
    assert "not available" in caplog.text


def test_provider_that_fails_to_start_falls_back_to_cpu(tiny_model, monkeypatch, caplog) -> None:
    real = ort.InferenceSession

    def flaky(path, sess_options=None, providers=None):
        if providers != ["CPUExecutionProvider"]:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(
        runtime.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(runtime.ort, "InferenceSession", flaky)
    with caplog.at_level(logging.WARNING, logger="encoders.runtime"):
        encoder = Encoder.load(tiny_model.directory)
    assert encoder.providers == ["CPUExecutionProvider"]
    assert "falling back to CPU" in caplog.text
    assert encoder.encode(_batch(encoder, 1), ["x"]).embeddings.shape[0] == 1


def test_session_that_cannot_load_on_cpu_is_a_model_error(model_copy: Path) -> None:
    from encoders.manifest import Manifest, describe_file

    (model_copy / "fusion.onnx").write_bytes(b"not a graph")
    manifest = Manifest.read(model_copy)
    files = {**manifest.files, "fusion": describe_file(model_copy, "fusion.onnx")}
    Manifest.from_dict(
        {**manifest.to_dict(), "files": {k: v.__dict__ for k, v in files.items()}}
    ).write(model_copy)
    with pytest.raises(ModelError) as info:
        Encoder.load(model_copy)
    assert info.value.reason == "session_failed"


def test_serving_path_imports_and_encodes_without_torch(
    tiny_model, jpeg_bytes: bytes, tmp_path: Path
) -> None:
    (tmp_path / "cover.jpg").write_bytes(jpeg_bytes)
    script = textwrap.dedent(
        f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith(("torch.", "transformers", "sentence_transformers")):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, NoTorch())
        from encoders.runtime import Encoder
        from encoders.preprocess import preprocess_image
        import encoders.cli, encoders.settings, encoders.manifest, encoders.tokenize

        enc = Encoder.load({str(tiny_model.directory)!r})
        pixels = preprocess_image(open({str(tmp_path / "cover.jpg")!r}, "rb").read(), enc.image_spec)
        result = enc.encode(pixels[None], ["red car"])
        assert result.embeddings.shape == (1, enc.manifest.embedding_dim)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", enc.manifest.model_version)
        """  # noqa: E501
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_shared_space_queries_by_photo_and_by_text(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory)
    assert encoder.has_shared_space
    s = encoder.image_spec.size
    images = np.random.default_rng(0).normal(size=(3, 3, s, s)).astype(np.float32)
    by_photo = encoder.image_embedding(images)
    by_text = encoder.text_embedding(["red sneakers", "a blue watch", "guitar"])
    dim = encoder.manifest.shared_space["dim"]
    assert by_photo.shape == (3, dim) and by_text.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(by_photo, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(by_text, axis=1), 1.0, rtol=1e-5)


def test_fuse_pairs_any_cover_with_any_title(tiny_model) -> None:
    encoder = Encoder.load(tiny_model.directory)
    s = encoder.image_spec.size
    images = np.random.default_rng(1).normal(size=(2, 3, s, s)).astype(np.float32)
    titles = ["red sneakers", "a blue watch"]
    whole = encoder.encode(images, titles)
    parts = encoder.fuse(encoder.image_features(images), encoder.text_features(titles))
    np.testing.assert_allclose(parts.embeddings, whole.embeddings, atol=1e-6)
    np.testing.assert_allclose(parts.mismatch, whole.mismatch, atol=1e-6)
