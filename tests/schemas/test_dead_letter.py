"""Dead-letter headers: build, parse back, replace stale ones, reject broken ones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from schemas import (
    ContractError,
    DeadLetter,
    DeadLetterStage,
    ListingEvent,
    Reason,
    dead_letter_headers,
    decode,
)

from .strategies import dead_letters

FAILED_AT = datetime(2026, 11, 21, 5, 39, tzinfo=UTC)


def _letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "topic": "listings.events",
        "partition": 3,
        "offset": 1042,
        "stage": DeadLetterStage.FETCH,
        "reason": "image_unreachable",
        "message": "GET https://img.example/1.jpg: 404",
        "failed_at": FAILED_AT,
        "attempts": 3,
    }
    return DeadLetter.model_validate(fields | overrides)


def test_headers_are_utf8_strings_under_the_prefix() -> None:
    headers = _letter().to_headers()
    assert dict(headers) == {
        "vitrine.dlq.schema_version": b"1",
        "vitrine.dlq.topic": b"listings.events",
        "vitrine.dlq.partition": b"3",
        "vitrine.dlq.offset": b"1042",
        "vitrine.dlq.stage": b"fetch",
        "vitrine.dlq.reason": b"image_unreachable",
        "vitrine.dlq.message": b"GET https://img.example/1.jpg: 404",
        "vitrine.dlq.failed_at": b"2026-11-21T05:39:00Z",
        "vitrine.dlq.attempts": b"3",
    }


@settings(max_examples=40, deadline=None)
@given(dead_letters)
def test_headers_round_trip(letter: DeadLetter) -> None:
    assert DeadLetter.from_headers(letter.to_headers()) == letter


def test_from_contract_error_carries_reason_and_field() -> None:
    with pytest.raises(ContractError) as caught:
        decode(b'{"schema_version": 1, "listing_id": "a b"}', ListingEvent)
    letter = DeadLetter.from_error(
        caught.value, topic="listings.events", partition=0, offset=7, stage=DeadLetterStage.DECODE
    )
    assert (letter.reason, letter.field) == ("missing_field", "event_id")
    assert letter.failed_at.tzinfo is not None


def test_long_messages_are_truncated_not_rejected() -> None:
    letter = _letter(message="x" * 5000)
    assert len(letter.message) == 1000 and letter.message.endswith("...")


def test_original_headers_are_kept_and_stale_dlq_headers_replaced() -> None:
    original = [
        ("traceparent", b"00-abc-01"),
        ("vitrine.dlq.reason", b"old_reason"),
        ("empty", None),
    ]
    headers = dead_letter_headers(original, _letter())
    assert headers[:2] == [("traceparent", b"00-abc-01"), ("empty", None)]
    assert [v for k, v in headers if k == "vitrine.dlq.reason"] == [b"image_unreachable"]


def test_other_headers_are_ignored_and_last_value_wins() -> None:
    headers = [("x", b"\xff"), *_letter().to_headers(), ("vitrine.dlq.attempts", b"4")]
    assert DeadLetter.from_headers(headers).attempts == 4


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("vitrine.dlq.topic", None, Reason.MISSING_FIELD),
        ("vitrine.dlq.stage", b"download", Reason.INVALID_VALUE),
        ("vitrine.dlq.partition", b"-1", Reason.INVALID_VALUE),
        ("vitrine.dlq.offset", b"12x", Reason.INVALID_VALUE),
        ("vitrine.dlq.reason", b"Not A Code", Reason.INVALID_VALUE),
        ("vitrine.dlq.failed_at", b"yesterday", Reason.INVALID_VALUE),
        ("vitrine.dlq.message", "é".encode("latin-1"), Reason.INVALID_VALUE),
        ("vitrine.dlq.schema_version", b"2", Reason.UNSUPPORTED_VERSION),
    ],
)
def test_broken_headers_name_the_header(name: str, value: bytes | None, reason: Reason) -> None:
    headers = [(k, v) for k, v in _letter().to_headers() if k != name]
    if value is not None:
        headers.append((name, value))
    with pytest.raises(ContractError) as caught:
        DeadLetter.from_headers(headers)
    assert (caught.value.reason, caught.value.field) == (reason, name)
