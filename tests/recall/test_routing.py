"""Reply routing from the Spring Kafka headers (pure)."""

from __future__ import annotations

from recall.routing import ReplyTarget, reply_target
from schemas import (
    CORRELATION_ID_HEADER,
    REPLY_PARTITION_HEADER,
    REPLY_TOPIC_HEADER,
    encode_reply_partition,
)

CID = bytes(range(16))


def test_topic_partition_and_correlation_are_taken_as_sent() -> None:
    headers = [
        (REPLY_TOPIC_HEADER, b"svc.replies"),
        (CORRELATION_ID_HEADER, CID),
        (REPLY_PARTITION_HEADER, encode_reply_partition(3)),
    ]
    target, problem = reply_target(headers, "recall.replies")
    assert problem is None
    assert target == ReplyTarget("svc.replies", 3, CID)
    assert target.headers() == [(CORRELATION_ID_HEADER, CID)]


def test_missing_reply_topic_falls_back_to_the_default() -> None:
    target, problem = reply_target([(CORRELATION_ID_HEADER, CID)], "recall.replies")
    assert problem is None
    assert target == ReplyTarget("recall.replies", None, CID)


def test_no_headers_at_all_still_routes_without_correlation() -> None:
    target, problem = reply_target(None, "recall.replies")
    assert problem is None
    assert target == ReplyTarget("recall.replies")
    assert target.headers() == []


def test_last_header_value_wins() -> None:
    headers = [(REPLY_TOPIC_HEADER, b"first"), (REPLY_TOPIC_HEADER, b"second")]
    assert reply_target(headers, "d")[0].topic == "second"


def test_malformed_headers_are_invalid_and_go_to_the_default_topic() -> None:
    for headers, reason in [
        ([(REPLY_TOPIC_HEADER, b"\xff\xfe")], "invalid_value"),
        ([(REPLY_TOPIC_HEADER, b"bad topic!")], "invalid_value"),
        ([(REPLY_TOPIC_HEADER, b"ok"), (REPLY_PARTITION_HEADER, b"\x00\x01")], "invalid_value"),
        (
            [(REPLY_TOPIC_HEADER, b"ok"), (REPLY_PARTITION_HEADER, b"\xff\xff\xff\xff")],
            "out_of_range",
        ),
        ([(CORRELATION_ID_HEADER, b"x" * 257)], "too_long"),
    ]:
        target, problem = reply_target(headers, "dflt")
        assert problem is not None and problem.reason == reason, headers
        assert target.topic == "dflt" and target.partition is None
