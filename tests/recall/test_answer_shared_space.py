"""Text and photo queries: embedded by the model, searched against the cover vectors of rows
written by the same model; bad input answered ``invalid`` with a reason, a worker or
collection that cannot serve them answered ``error`` with a reason."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recall.answer import Inbound, RecallAnswerer
from recall.query_embedding import QueryEmbedder
from schemas import RecallStatus
from tests.stub_model import build_stub_model

from .conftest import Catalog, CatalogIndex

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> QueryEmbedder:
    return QueryEmbedder(build_stub_model(tmp_path_factory.mktemp("m") / "stub"))


@pytest.fixture
def index(catalog: Catalog, embedder: QueryEmbedder) -> CatalogIndex:
    index = CatalogIndex(Catalog(**{**catalog.__dict__, "model_version": embedder.model_version}))
    rng = np.random.default_rng(11)
    index.image_vectors = rng.standard_normal((len(catalog.ids), 8)).astype(np.float32)
    return index


def _request(query: dict[str, object], k: int = 5, **extra: object) -> bytes:
    body = {"schema_version": 1, "request_id": "r1", "query": query, "k": k, **extra}
    return json.dumps(body).encode()


def _jpeg() -> str:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


def _answer(index: CatalogIndex, embedder: QueryEmbedder | None, value: bytes):  # type: ignore[no-untyped-def]
    answerer = RecallAnswerer(index, embedder=embedder, clock=lambda: NOW)
    [reply] = answerer.answer([Inbound(value, 0.0)])
    return reply


@pytest.mark.parametrize("query", [{"text": "red guitar"}, {"image": _jpeg()}])
def test_text_and_photo_queries_search_the_cover_vectors(
    index: CatalogIndex, embedder: QueryEmbedder, query: dict[str, object]
) -> None:
    reply = _answer(index, embedder, _request(query, k=5))
    assert reply.status is RecallStatus.OK, reply
    assert index.fields == ["image_vector"]
    assert reply.model_version == embedder.model_version
    # The order of an exact search of the embedded query over the cover vectors.
    from schemas import RecallQuery

    vector = np.asarray(embedder.embed(RecallQuery.model_validate(query)), np.float64)
    images = index.image_vectors.astype(np.float64)  # type: ignore[union-attr]
    scores = images @ vector / np.linalg.norm(images, axis=1)
    want = [index.catalog.ids[i] for i in np.argsort(-scores)[:5]]
    assert [item.listing_id for item in reply.items] == want


def test_filters_apply_and_rows_of_another_model_never_match(
    index: CatalogIndex, embedder: QueryEmbedder
) -> None:
    from schemas import RecallFilters

    filters = RecallFilters(categories=("shoes",))
    index.register(filters)
    reply = _answer(
        index, embedder, _request({"text": "shoe"}, k=4, filters={"categories": ["shoes"]})
    )
    assert reply.status is RecallStatus.OK
    assert reply.items and all(item.category == "shoes" for item in reply.items)
    other = CatalogIndex(Catalog(**{**index.catalog.__dict__, "model_version": "older.1"}))
    other.image_vectors = index.image_vectors
    reply = _answer(other, embedder, _request({"text": "shoe"}))
    assert reply.status is RecallStatus.OK and reply.items == ()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"text": "   "}, "empty_text"),
        ({"image": base64.b64encode(b"GIF89a broken").decode()}, "not_an_image"),
        ({"image": "QUJD"}, "not_an_image"),
    ],
)
def test_bad_text_or_photo_is_invalid_with_a_reason(
    index: CatalogIndex, embedder: QueryEmbedder, query: dict[str, object], reason: str
) -> None:
    reply = _answer(index, embedder, _request(query))
    assert (reply.status, reply.reason) == (RecallStatus.INVALID, reason)
    assert index.searches == []


def test_without_a_model_or_cover_vectors_the_reply_says_why(
    index: CatalogIndex, embedder: QueryEmbedder, tmp_path: Path
) -> None:
    reply = _answer(index, None, _request({"text": "chair"}))
    assert (reply.status, reply.reason) == (RecallStatus.ERROR, "model_unavailable")
    index.image_vectors = None
    reply = _answer(index, embedder, _request({"text": "chair"}))
    assert (reply.status, reply.reason) == (RecallStatus.ERROR, "no_shared_space")
    # Listing queries on the same worker are unaffected.
    reply = _answer(index, embedder, _request({"listing_id": "L00001"}))
    assert reply.status is RecallStatus.OK
