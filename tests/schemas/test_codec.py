"""decode/encode: round trips, and every invalid input mapped to its reason and field."""

# The invalid-input table reads best one case per line.
# ruff: noqa: E501

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from schemas import (
    MAX_PAYLOAD_BYTES,
    ContractError,
    ContractModel,
    EmbeddedEvent,
    ListingEvent,
    Reason,
    RecallReply,
    RecallRequest,
    decode,
    decode_embedded_event,
    decode_listing_event,
    decode_recall_reply,
    decode_recall_request,
    encode,
)

from .strategies import embedded_events, listing_events, recall_replies, recall_requests

LISTING: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "6f1c2a3e-0d0b-4c43-9b8e-0a7c1b2d3e4f",
    "event_type": "created",
    "listing_id": "L-1001",
    "version": 7,
    "occurred_at": "2026-11-21T05:39:00.250Z",
    "title": "Oak dining chair, set of 2 — très solide",
    "image_urls": ["https://img.example/1.jpg", "https://img.example/2.jpg"],
    "category": "home/furniture/chairs",
    "price": {"amount": 89.5, "currency": "EUR"},
    "seller_id": "seller_42",
    "marketplace": "fr-FR",
}
EMBEDDED: dict[str, Any] = {
    "schema_version": 1,
    "listing_id": "L-1001",
    "version": 7,
    "outcome": "embedded",
    "model_version": "2026.11.0",
    "mismatch_score": 0.12,
    "occurred_at": "2026-11-21T05:39:00.250Z",
    "embedded_at": "2026-11-21T05:39:01.100Z",
    "freshness_seconds": 0.85,
}
REQUEST: dict[str, Any] = {
    "schema_version": 1,
    "request_id": "req-1",
    "query": {"listing_id": "L-1001"},
    "k": 10,
    "filters": {
        "categories": ["home/furniture/chairs"],
        "price_range": {"min": 10, "max": 200, "currency": "EUR"},
        "exclude_sellers": ["seller_42"],
        "exclude_listings": ["L-1001"],
        "max_mismatch": 0.5,
    },
    "deadline": "2026-11-21T05:39:02Z",
}
REPLY: dict[str, Any] = {
    "schema_version": 1,
    "request_id": "req-1",
    "status": "ok",
    "items": [
        {
            "listing_id": "L-2002",
            "score": 0.93,
            "mismatch_score": 0.05,
            "category": "home/furniture/chairs",
            "price": {"amount": 75, "currency": "EUR"},
        }
    ],
    "model_version": "2026.11.0",
    "took_seconds": 0.004,
}


def _bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


@pytest.mark.parametrize(
    ("payload", "model_cls", "decoder"),
    [
        (LISTING, ListingEvent, decode_listing_event),
        (EMBEDDED, EmbeddedEvent, decode_embedded_event),
        (REQUEST, RecallRequest, decode_recall_request),
        (REPLY, RecallReply, decode_recall_reply),
    ],
)
def test_examples_round_trip(
    payload: dict[str, Any], model_cls: type[ContractModel], decoder: Any
) -> None:
    model = decoder(_bytes(payload))
    assert isinstance(model, model_cls)
    assert decode(encode(model), model_cls) == model


@settings(max_examples=30, deadline=None)
@given(listing_events())
def test_listing_event_round_trip(model: ListingEvent) -> None:
    assert decode(encode(model), ListingEvent) == model


@settings(max_examples=30, deadline=None)
@given(embedded_events())
def test_embedded_event_round_trip(model: EmbeddedEvent) -> None:
    assert decode(encode(model), EmbeddedEvent) == model


@settings(max_examples=30, deadline=None)
@given(recall_requests)
def test_recall_request_round_trip(model: RecallRequest) -> None:
    assert decode(encode(model), RecallRequest) == model


@settings(max_examples=30, deadline=None)
@given(recall_replies)
def test_recall_reply_round_trip(model: RecallReply) -> None:
    assert decode(encode(model), RecallReply) == model


def test_encode_is_compact_utf8_without_nulls() -> None:
    data = encode(
        decode_listing_event(_bytes(_without(LISTING, "marketplace") | {"marketplace": "de"}))
    )
    compact = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False)
    assert data == compact.encode()
    assert "très".encode() in data  # raw UTF-8, not \u escapes
    deleted = decode_listing_event(
        _bytes(
            {
                k: LISTING[k]
                for k in ("schema_version", "event_id", "listing_id", "version", "occurred_at")
            }
            | {"event_type": "deleted"}
        )
    )
    assert b"null" not in encode(deleted)


def test_unknown_top_level_fields_are_ignored() -> None:
    event = decode_listing_event(
        _bytes({**LISTING, "promoted": True, "price": {**LISTING["price"], "vat": 0.2}})
    )
    assert b"promoted" not in encode(event) and b"vat" not in encode(event)


def test_timestamps_keep_microseconds_of_nanosecond_input() -> None:
    event = decode_listing_event(
        _bytes({**LISTING, "occurred_at": "2026-11-21T05:39:00.123456789+01:00"})
    )
    assert event.occurred_at.microsecond == 123456


def test_error_is_a_vitrine_error_with_message_and_contract() -> None:
    from vitrine.errors import VitrineError

    with pytest.raises(ContractError) as caught:
        decode_listing_event(_bytes({**LISTING, "price": {"amount": -1, "currency": "EUR"}}))
    assert isinstance(caught.value, VitrineError)
    assert caught.value.contract == "listing_event"
    assert caught.value.message == "listing_event: field 'price.amount' must be >= 0, got -1"


def test_several_problems_are_counted_in_the_message() -> None:
    with pytest.raises(ContractError, match=r"and 1 more problem"):
        decode_listing_event(_bytes({**LISTING, "version": -1, "title": ""}))


_DELETE = {
    k: LISTING[k] for k in ("schema_version", "event_id", "listing_id", "version", "occurred_at")
}

INVALID: list[tuple[str, Any, type[ContractModel], str, str | None]] = [
    # (case id, raw bytes or payload, model, reason, field)
    ("too-large", b" " * (MAX_PAYLOAD_BYTES + 1), ListingEvent, "payload_too_large", None),
    ("tombstone", None, ListingEvent, "malformed_json", None),
    ("empty", b"", ListingEvent, "malformed_json", None),
    ("not-utf8", b'{"title": "\xff"}', ListingEvent, "malformed_json", None),
    ("not-json", b"{'a': 1}", ListingEvent, "malformed_json", None),
    ("nan", b'{"k": NaN}', RecallRequest, "malformed_json", None),
    ("duplicate-key", b'{"k": 1, "k": 2}', RecallRequest, "malformed_json", None),
    ("deep-nesting", b"[" * 50_000, ListingEvent, "malformed_json", None),
    ("array", b"[]", ListingEvent, "not_an_object", None),
    ("string", b'"hi"', ListingEvent, "not_an_object", None),
    ("newer-version", {**LISTING, "schema_version": 2}, ListingEvent, "unsupported_version", "schema_version"),
    ("version-zero", {**LISTING, "schema_version": 0}, ListingEvent, "unsupported_version", "schema_version"),
    ("version-string", {**LISTING, "schema_version": "1"}, ListingEvent, "wrong_type", "schema_version"),
    ("no-version", _without(LISTING, "schema_version"), ListingEvent, "missing_field", "schema_version"),
    ("no-listing-id", _without(LISTING, "listing_id"), ListingEvent, "missing_field", "listing_id"),
    ("created-no-title", _without(LISTING, "title"), ListingEvent, "missing_field", "title"),
    ("updated-no-price", {**_without(LISTING, "price"), "event_type": "updated"}, ListingEvent, "missing_field", "price"),
    ("deleted-minimal-ok-but-bad-type", {**_DELETE, "event_type": "archived"}, ListingEvent, "invalid_value", "event_type"),
    ("no-currency", {**LISTING, "price": {"amount": 1}}, ListingEvent, "missing_field", "price.currency"),
    ("currency-lower", {**LISTING, "price": {"amount": 1, "currency": "eur"}}, ListingEvent, "invalid_value", "price.currency"),
    ("negative-price", {**LISTING, "price": {"amount": -0.01, "currency": "EUR"}}, ListingEvent, "out_of_range", "price.amount"),
    ("price-string", {**LISTING, "price": {"amount": "9.99", "currency": "EUR"}}, ListingEvent, "wrong_type", "price.amount"),
    ("listing-id-quote", {**LISTING, "listing_id": "a' or 1=1"}, ListingEvent, "invalid_value", "listing_id"),
    ("listing-id-65", {**LISTING, "listing_id": "a" * 65}, ListingEvent, "invalid_value", "listing_id"),
    ("listing-id-int", {**LISTING, "listing_id": 1001}, ListingEvent, "wrong_type", "listing_id"),
    ("version-negative", {**LISTING, "version": -1}, ListingEvent, "out_of_range", "version"),
    ("version-float", {**LISTING, "version": 1.5}, ListingEvent, "wrong_type", "version"),
    ("title-501", {**LISTING, "title": "x" * 501}, ListingEvent, "too_long", "title"),
    ("title-empty", {**LISTING, "title": ""}, ListingEvent, "invalid_value", "title"),
    ("urls-25", {**LISTING, "image_urls": ["https://a/x"] * 25}, ListingEvent, "too_long", "image_urls"),
    ("urls-empty", {**LISTING, "image_urls": []}, ListingEvent, "invalid_value", "image_urls"),
    ("url-ftp", {**LISTING, "image_urls": ["https://a/1", "https://a/2", "https://a/3", "ftp://a/4"]}, ListingEvent, "invalid_value", "image_urls[3]"),
    ("url-2049", {**LISTING, "image_urls": ["https://a/" + "x" * 2039]}, ListingEvent, "too_long", "image_urls[0]"),
    ("url-space", {**LISTING, "image_urls": ["https://a/b c.jpg"]}, ListingEvent, "invalid_value", "image_urls[0]"),
    ("time-no-offset", {**LISTING, "occurred_at": "2026-11-21T05:39:00"}, ListingEvent, "invalid_value", "occurred_at"),
    ("time-feb-30", {**LISTING, "occurred_at": "2026-02-30T05:39:00Z"}, ListingEvent, "invalid_value", "occurred_at"),
    ("time-epoch", {**LISTING, "occurred_at": 1790000000}, ListingEvent, "wrong_type", "occurred_at"),
    ("null-optional", {**LISTING, "marketplace": None}, ListingEvent, "wrong_type", "marketplace"),
    ("mismatch-above-1", {**EMBEDDED, "mismatch_score": 1.01}, EmbeddedEvent, "out_of_range", "mismatch_score"),
    ("embedded-no-score", _without(EMBEDDED, "mismatch_score"), EmbeddedEvent, "missing_field", "mismatch_score"),
    ("bad-outcome", {**EMBEDDED, "outcome": "skipped"}, EmbeddedEvent, "invalid_value", "outcome"),
    ("k-zero", {**REQUEST, "k": 0}, RecallRequest, "out_of_range", "k"),
    ("k-201", {**REQUEST, "k": 201}, RecallRequest, "out_of_range", "k"),
    ("query-both", {**REQUEST, "query": {"listing_id": "a", "vector": [0.1]}}, RecallRequest, "invalid_value", "query"),
    ("query-none", {**REQUEST, "query": {}}, RecallRequest, "invalid_value", "query"),
    ("query-unknown", {**REQUEST, "query": {"sku": "chair"}}, RecallRequest, "unknown_field", "query.sku"),
    ("image-not-base64", {**REQUEST, "query": {"image": "not base64!"}}, RecallRequest, "invalid_value", "query.image"),
    ("text-501", {**REQUEST, "query": {"text": "x" * 501}}, RecallRequest, "too_long", "query.text"),
    ("text-and-image", {**REQUEST, "query": {"text": "chair", "image": "AAAA"}}, RecallRequest, "invalid_value", "query"),
    ("vector-4097", {**REQUEST, "query": {"vector": [0.0] * 4097}}, RecallRequest, "too_long", "query.vector"),
    ("vector-string", {**REQUEST, "query": {"vector": [0.1, "x"]}}, RecallRequest, "wrong_type", "query.vector[1]"),
    ("filter-typo", {**REQUEST, "filters": {"exclude_seller": ["s"]}}, RecallRequest, "unknown_field", "filters.exclude_seller"),
    ("categories-101", {**REQUEST, "filters": {"categories": ["c"] * 101}}, RecallRequest, "too_long", "filters.categories"),
    ("exclude-1001", {**REQUEST, "filters": {"exclude_listings": ["a"] * 1001}}, RecallRequest, "too_long", "filters.exclude_listings"),
    ("seller-bad", {**REQUEST, "filters": {"exclude_sellers": ["ok", "no way"]}}, RecallRequest, "invalid_value", "filters.exclude_sellers[1]"),
    ("max-mismatch", {**REQUEST, "filters": {"max_mismatch": -0.1}}, RecallRequest, "out_of_range", "filters.max_mismatch"),
    ("price-no-currency", {**REQUEST, "filters": {"price_range": {"min": 1}}}, RecallRequest, "missing_field", "filters.price_range.currency"),
    ("price-min-gt-max", {**REQUEST, "filters": {"price_range": {"min": 9, "max": 1, "currency": "EUR"}}}, RecallRequest, "invalid_value", "filters.price_range"),
    ("deadline-bad", {**REQUEST, "deadline": "tomorrow"}, RecallRequest, "invalid_value", "deadline"),
    ("reply-no-reason", {**_without(REPLY, "items"), "status": "error"}, RecallReply, "missing_field", "reason"),
    ("reply-ok-no-items", _without(REPLY, "items"), RecallReply, "missing_field", "items"),
    ("reply-bad-status", {**REPLY, "status": "timeout"}, RecallReply, "invalid_value", "status"),
    ("reply-201-items", {**REPLY, "items": REPLY["items"] * 201}, RecallReply, "too_long", "items"),
    ("reply-item-no-score", {**REPLY, "items": [{"listing_id": "a"}]}, RecallReply, "missing_field", "items[0].score"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "model_cls", "reason", "field"),
    [pytest.param(raw, cls, reason, field, id=case) for case, raw, cls, reason, field in INVALID],
)
def test_invalid_input_maps_to_reason_and_field(
    raw: Any, model_cls: type[ContractModel], reason: str, field: str | None
) -> None:
    data = raw if raw is None or isinstance(raw, bytes) else _bytes(raw)
    with pytest.raises(ContractError) as caught:
        decode(data, model_cls)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.reason in set(Reason)
    assert caught.value.message.startswith(model_cls.contract)


def test_deleted_event_needs_only_identity() -> None:
    event = decode_listing_event(_bytes({**_DELETE, "event_type": "deleted"}))
    assert event.title is None and event.cover_url is None


def test_payload_cap_is_checked_before_parsing() -> None:
    # Not JSON at all, yet the size is what gets reported: nothing was parsed.
    with pytest.raises(ContractError) as caught:
        decode(b"\xff" * (MAX_PAYLOAD_BYTES + 1), ListingEvent)
    assert caught.value.reason == Reason.PAYLOAD_TOO_LARGE
