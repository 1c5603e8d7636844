"""Recall request-reply routing headers (Spring Kafka convention)."""

from __future__ import annotations

import pytest

from recall.routing import ReplyTarget, reply_target
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
    target, problem = reply_target(route.request_headers(), "default")
    assert (target, problem) == (ReplyTarget("search.replies", 2, b"\x00\x9f\xffid"), None)
    assert route.reply_headers() == [(CORRELATION_ID_HEADER, b"\x00\x9f\xffid")]


def test_partition_header_is_optional() -> None:
    headers = [(REPLY_TOPIC_HEADER, b"replies"), (CORRELATION_ID_HEADER, b"c1"), ("x", None)]
    assert reply_target(headers, "default") == (ReplyTarget("replies", None, b"c1"), None)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(REPLY_TOPIC_HEADER, b"bad topic"), (CORRELATION_ID_HEADER, b"c")], "invalid_value"),
        ([(REPLY_TOPIC_HEADER, b"r"), (CORRELATION_ID_HEADER, b"c" * 257)], "too_long"),
        (
            [
                (REPLY_TOPIC_HEADER, b"r"),
                (CORRELATION_ID_HEADER, b"c"),
                (REPLY_PARTITION_HEADER, b"1"),
            ],
            Reason.INVALID_VALUE.value,
        ),
        (
            [
                (REPLY_TOPIC_HEADER, b"r"),
                (CORRELATION_ID_HEADER, b"c"),
                (REPLY_PARTITION_HEADER, b"\xff\xff\xff\xff"),
            ],
            Reason.OUT_OF_RANGE.value,
        ),
    ],
)
def test_broken_routing_headers(headers: list[tuple[str, bytes | None]], reason: str) -> None:
    # The reply can still be routed (to the default topic) and says what was wrong.
    target, problem = reply_target(headers, "default")
    assert target.topic == "default"
    assert problem is not None and problem.reason == reason


def test_a_bad_partition_header_is_a_contract_error() -> None:
    with pytest.raises(ContractError) as caught:
        decode_reply_partition(b"\x00\x01")
    assert (caught.value.reason, caught.value.field) == (
        Reason.INVALID_VALUE,
        REPLY_PARTITION_HEADER,
    )
