"""Recall request-reply routing headers (Spring Kafka convention)."""

from __future__ import annotations

import pytest

from schemas import (
    CORRELATION_ID_HEADER,
    REPLY_PARTITION_HEADER,
    REPLY_TOPIC_HEADER,
    ContractError,
    Reason,
    ReplyRoute,
    decode_reply_partition,
    encode_reply_partition,
)


def test_partition_is_four_bytes_big_endian() -> None:
    assert encode_reply_partition(258) == b"\x00\x00\x01\x02"
    assert decode_reply_partition(b"\x00\x00\x01\x02") == 258


def test_route_round_trips_through_request_headers() -> None:
    route = ReplyRoute(topic="search.replies", correlation_id=b"\x00\x9f\xffid", partition=2)
    assert ReplyRoute.from_headers(route.request_headers()) == route
    assert route.reply_headers() == [(CORRELATION_ID_HEADER, b"\x00\x9f\xffid")]


def test_partition_header_is_optional() -> None:
    headers = [(REPLY_TOPIC_HEADER, b"replies"), (CORRELATION_ID_HEADER, b"c1"), ("x", None)]
    assert ReplyRoute.from_headers(headers).partition is None


@pytest.mark.parametrize(
    ("headers", "reason", "field"),
    [
        ([(CORRELATION_ID_HEADER, b"c")], Reason.MISSING_FIELD, REPLY_TOPIC_HEADER),
        ([(REPLY_TOPIC_HEADER, b"r")], Reason.MISSING_FIELD, CORRELATION_ID_HEADER),
        (
            [(REPLY_TOPIC_HEADER, b"bad topic"), (CORRELATION_ID_HEADER, b"c")],
            Reason.INVALID_VALUE,
            REPLY_TOPIC_HEADER,
        ),
        (
            [(REPLY_TOPIC_HEADER, b"r"), (CORRELATION_ID_HEADER, b"c" * 257)],
            Reason.TOO_LONG,
            CORRELATION_ID_HEADER,
        ),
        (
            [
                (REPLY_TOPIC_HEADER, b"r"),
                (CORRELATION_ID_HEADER, b"c"),
                (REPLY_PARTITION_HEADER, b"1"),
            ],
            Reason.INVALID_VALUE,
            REPLY_PARTITION_HEADER,
        ),
        (
            [
                (REPLY_TOPIC_HEADER, b"r"),
                (CORRELATION_ID_HEADER, b"c"),
                (REPLY_PARTITION_HEADER, b"\xff\xff\xff\xff"),
            ],
            Reason.OUT_OF_RANGE,
            REPLY_PARTITION_HEADER,
        ),
    ],
)
def test_broken_routing_headers(
    headers: list[tuple[str, bytes | None]], reason: Reason, field: str
) -> None:
    with pytest.raises(ContractError) as caught:
        ReplyRoute.from_headers(headers)
    assert (caught.value.reason, caught.value.field) == (reason, field)
