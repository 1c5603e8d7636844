"""Text and photo queries embedded into the shared space, with a reason for every bad input."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recall.errors import EmbeddingFailed, InvalidQuery
from recall.query_embedding import QueryEmbedder
from schemas import RecallQuery, limits
from tests.stub_model import build_stub_model


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> QueryEmbedder:
    return QueryEmbedder(build_stub_model(tmp_path_factory.mktemp("model") / "stub"))


def _jpeg(colour: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG")
    return out.getvalue()


def _image_query(data: bytes) -> RecallQuery:
    return RecallQuery(image=base64.b64encode(data).decode())


def test_text_and_photo_become_unit_vectors_of_the_shared_space(embedder: QueryEmbedder) -> None:
    text = np.asarray(embedder.embed(RecallQuery(text="  red   car ")))
    photo = np.asarray(embedder.embed(_image_query(_jpeg((200, 10, 10)))))
    assert text.shape == photo.shape == (8,)
    assert np.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(photo) == pytest.approx(1.0, abs=1e-5)
    # Whitespace is normalised; the same photo gives the same vector.
    assert embedder.embed(RecallQuery(text="red car")) == tuple(text)
    assert embedder.embed(_image_query(_jpeg((200, 10, 10)))) == tuple(photo)
    assert embedder.embed(_image_query(_jpeg((10, 10, 200)))) != tuple(photo)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (RecallQuery(text=""), "empty_text"),
        (RecallQuery(text=" \t\n"), "empty_text"),
        (RecallQuery(image=""), "not_an_image"),
        (RecallQuery(image="AAA"), "not_an_image"),  # bad padding
        (_image_query(b"%PDF-1.4 not a photo"), "not_an_image"),
        (_image_query(b"\xff\xd8\xff\xe0" + b"\x00" * 100), "not_an_image"),  # a broken JPEG
        (_image_query(b"\x00" * (limits.MAX_QUERY_IMAGE_BYTES + 1)), "too_large"),
    ],
)
def test_bad_queries_are_invalid_with_a_reason(
    embedder: QueryEmbedder, query: RecallQuery, reason: str
) -> None:
    with pytest.raises(InvalidQuery) as caught:
        embedder.embed(query)
    assert caught.value.reason == reason


def test_a_model_without_a_shared_space_says_so(tmp_path: Path) -> None:
    plain = QueryEmbedder(build_stub_model(tmp_path / "plain", shared_dim=None))
    with pytest.raises(EmbeddingFailed) as caught:
        plain.embed(RecallQuery(text="chair"))
    assert caught.value.reason == "no_shared_space"


def test_a_missing_model_is_an_error_not_a_crash(tmp_path: Path) -> None:
    missing = QueryEmbedder(tmp_path / "nowhere")
    with pytest.raises(EmbeddingFailed) as caught:
        missing.embed(RecallQuery(text="chair"))
    assert caught.value.reason == "model_unavailable"


def test_a_failed_load_is_remembered_then_retried(tmp_path: Path) -> None:
    from recall.query_embedding import RETRY_LOAD_AFTER_S

    now = [100.0]
    later = QueryEmbedder(tmp_path / "model", monotonic=lambda: now[0])
    with pytest.raises(EmbeddingFailed):
        later.embed(RecallQuery(text="chair"))
    build_stub_model(tmp_path / "model")  # the model appears (e.g. the build finished)
    now[0] += RETRY_LOAD_AFTER_S / 2
    with pytest.raises(EmbeddingFailed) as caught:  # answered from memory, no reload
        later.embed(RecallQuery(text="chair"))
    assert caught.value.reason == "model_unavailable"
    now[0] += RETRY_LOAD_AFTER_S
    assert len(later.embed(RecallQuery(text="chair"))) == 8
