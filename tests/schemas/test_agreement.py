"""The pydantic models and the JSON Schema files accept and reject the same payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas import (
    CatalogueEntry,
    ContractModel,
    DeadLetter,
    EmbeddedEvent,
    ListingEvent,
    LivePointer,
    RecallReply,
    RecallRequest,
    RolloutRecord,
    StreamAck,
    StreamRecord,
    encode,
    from_payload,
    validator_for,
)
from schemas.registry import (
    CATALOGUE_ENTRY,
    DEAD_LETTER_HEADERS,
    EMBEDDED_EVENT,
    LISTING_EVENT,
    LIVE_POINTER,
    RECALL_REPLY,
    RECALL_REQUEST,
    ROLLOUT_RECORD,
    STREAM_ACK,
    STREAM_RECORD,
)

from .strategies import (
    catalogue_entries,
    dead_letters,
    embedded_events,
    listing_events,
    live_pointers,
    payloads,
    recall_replies,
    recall_requests,
    rollout_records,
    stream_acks,
    stream_records,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MODELS: list[tuple[str, type[ContractModel], st.SearchStrategy[Any]]] = [
    (LISTING_EVENT, ListingEvent, listing_events()),
    (EMBEDDED_EVENT, EmbeddedEvent, embedded_events()),
    (RECALL_REQUEST, RecallRequest, recall_requests),
    (RECALL_REPLY, RecallReply, recall_replies),
    (CATALOGUE_ENTRY, CatalogueEntry, catalogue_entries()),
    (LIVE_POINTER, LivePointer, live_pointers()),
    (ROLLOUT_RECORD, RolloutRecord, rollout_records()),
    (STREAM_RECORD, StreamRecord, stream_records()),
    (STREAM_ACK, StreamAck, stream_acks()),
]


def _breaks_model_only_rule(payload: dict[str, Any]) -> bool:
    """min > max in a recall price range: the one rule JSON Schema cannot state."""
    filters = payload.get("filters")
    price_range = filters.get("price_range", {}) if isinstance(filters, dict) else {}
    low, high = price_range.get("min"), price_range.get("max")
    return low is not None and high is not None and low > high


@pytest.mark.parametrize(("name", "model_cls"), [(n, m) for n, m, _ in MODELS])
def test_schema_generated_payloads_build_models(name: str, model_cls: type[ContractModel]) -> None:
    @FAST
    @given(payloads(name))
    def check(payload: dict[str, Any]) -> None:
        validator_for(name).validate(payload)  # the generator itself is sound
        assume(not _breaks_model_only_rule(payload))
        model = from_payload(payload, model_cls)
        # Everything the model kept survives a re-encode and still satisfies the schema.
        validator_for(name).validate(json.loads(encode(model)))

    check()


@pytest.mark.parametrize(("name", "strategy"), [(n, s) for n, _, s in MODELS])
def test_model_instances_satisfy_schema(name: str, strategy: st.SearchStrategy[Any]) -> None:
    @FAST
    @given(strategy)
    def check(model: ContractModel) -> None:
        validator_for(name).validate(json.loads(encode(model)))

    check()


@FAST
@given(payloads(DEAD_LETTER_HEADERS))
def test_schema_generated_dead_letter_headers_parse(headers: dict[str, str]) -> None:
    validator_for(DEAD_LETTER_HEADERS).validate(headers)
    parsed = DeadLetter.from_headers([(k, v.encode()) for k, v in headers.items()])
    assert parsed.header_map().items() <= headers.items()


@FAST
@given(dead_letters)
def test_dead_letter_models_satisfy_header_schema(dead_letter: DeadLetter) -> None:
    validator_for(DEAD_LETTER_HEADERS).validate(dead_letter.header_map())


_LISTING = {
    "schema_version": 1,
    "event_id": "e-1",
    "event_type": "created",
    "listing_id": "L1",
    "version": 1,
    "occurred_at": "2026-11-21T05:39:00Z",
    "title": "Oak chair",
    "image_urls": ["https://img.example/1.jpg"],
    "category": "home/chairs",
    "price": {"amount": 20, "currency": "EUR"},
    "seller_id": "s1",
    "marketplace": "de",
}
_ENTRY = {
    "schema_version": 1,
    "listing_id": "L1",
    "version": 3,
    "occurred_at": "2026-11-21T05:39:00Z",
    "title": "Oak chair",
    "cover_url": "https://img.example/1.jpg",
    "cover_sha256": "ab" * 32,
    "category": "home/chairs",
    "price": {"amount": 20, "currency": "EUR"},
    "seller_id": "s1",
    "marketplace": "de",
}
_POINTER = {
    "schema_version": 1,
    "collection": "listings_m2",
    "model_version": "m2",
    "changed_at": "2026-11-21T05:39:00Z",
}
_STREAM = {
    "schema_version": 1,
    "collection": "listings__m2",
    "model_version": "m2",
    "model_dir": "/models/m2",
    "catch_up_group": "vitrine-embedder-rollout-listings__m2-1",
    "changed_at": "2026-11-21T05:39:00Z",
}
_ACK = {
    "schema_version": 1,
    "app_id": "vitrine-embedder",
    "client_id": "vitrine-embedder.host-1.42",
    "collection": "listings__m2",
    "model_version": "m2",
    "acked_at": "2026-11-21T05:39:00Z",
}
_REQUEST = {"schema_version": 1, "request_id": "r1", "query": {"listing_id": "L1"}, "k": 5}

REJECTED: list[tuple[str, type[ContractModel], dict[str, Any]]] = [
    (LISTING_EVENT, ListingEvent, {**_LISTING, "listing_id": 'a"b'}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "listing_id": "L1\n"}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "title": "x" * 501}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "image_urls": ["https://a/b c"]}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "image_urls": []}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "price": {"amount": 1, "currency": "eur"}}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "occurred_at": "2026-11-21T05:39:00"}),
    (LISTING_EVENT, ListingEvent, {**_LISTING, "version": -1}),
    (LISTING_EVENT, ListingEvent, {k: v for k, v in _LISTING.items() if k != "price"}),
    (RECALL_REQUEST, RecallRequest, {**_REQUEST, "k": 201}),
    (RECALL_REQUEST, RecallRequest, {**_REQUEST, "query": {}}),
    (RECALL_REQUEST, RecallRequest, {**_REQUEST, "query": {"listing_id": "a", "vector": [1]}}),
    (RECALL_REQUEST, RecallRequest, {**_REQUEST, "filters": {"max_mismatch": 1.5}}),
    (RECALL_REQUEST, RecallRequest, {**_REQUEST, "filters": {"category": ["a"]}}),
    (RECALL_REPLY, RecallReply, {"schema_version": 1, "status": "error", "took_seconds": 0}),
    (CATALOGUE_ENTRY, CatalogueEntry, {**_ENTRY, "cover_sha256": "ABC"}),
    (CATALOGUE_ENTRY, CatalogueEntry, {k: v for k, v in _ENTRY.items() if k != "title"}),
    (CATALOGUE_ENTRY, CatalogueEntry, {**_ENTRY, "cover_url": "ftp://a/b"}),
    (LIVE_POINTER, LivePointer, {**_POINTER, "collection": "a-b"}),
    (LIVE_POINTER, LivePointer, {**_POINTER, "reason": "whim"}),
    (LIVE_POINTER, LivePointer, {k: v for k, v in _POINTER.items() if k != "model_version"}),
    (STREAM_RECORD, StreamRecord, {k: v for k, v in _STREAM.items() if k != "model_dir"}),
    (STREAM_RECORD, StreamRecord, {**_STREAM, "catch_up_group": "a group"}),
    (STREAM_RECORD, StreamRecord, {**_STREAM, "collection": "a-b"}),
    (STREAM_ACK, StreamAck, {**_ACK, "client_id": "a/b"}),
    (STREAM_ACK, StreamAck, {k: v for k, v in _ACK.items() if k != "collection"}),
]


@pytest.mark.parametrize(("name", "model_cls", "payload"), REJECTED)
def test_schema_and_model_reject_alike(
    name: str, model_cls: type[ContractModel], payload: dict[str, Any]
) -> None:
    assert not validator_for(name).is_valid(payload)
    with pytest.raises(ValueError):
        model_cls.model_validate(payload)


def test_price_range_order_is_a_model_only_rule() -> None:
    # JSON Schema cannot compare two fields; the schema accepts, the model (and so decode)
    # rejects. docs/contracts.md names this as the one reader-side rule.
    payload = {**_REQUEST, "filters": {"price_range": {"min": 5, "max": 1, "currency": "EUR"}}}
    assert validator_for(RECALL_REQUEST).is_valid(payload)
    with pytest.raises(ValueError, match="greater than max"):
        RecallRequest.model_validate(payload)
