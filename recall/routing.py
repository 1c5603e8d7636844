"""Where a reply goes (pure): the Spring Kafka request-reply headers, read leniently.

A request whose routing headers are missing or malformed still gets a reply when one can be
routed at all: without ``kafka_replyTopic`` it goes to the default replies topic, and a
malformed header turns the reply into ``invalid`` (sent to the default topic, since the named
one cannot be trusted). The correlation id is echoed byte for byte; without one, the reply
carries none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas import (
    CORRELATION_ID_HEADER,
    REPLY_PARTITION_HEADER,
    REPLY_TOPIC_HEADER,
    ContractError,
    decode_reply_partition,
    limits,
)
from schemas.headers import MAX_CORRELATION_ID_BYTES

_TOPIC = re.compile(limits.TOPIC_PATTERN)


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Topic, optional partition and correlation id of one reply."""

    topic: str
    partition: int | None = None
    correlation_id: bytes | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Reply headers: the correlation id, unchanged, when the request had one."""
        if self.correlation_id is None:
            return []
        return [(CORRELATION_ID_HEADER, self.correlation_id)]


@dataclass(frozen=True, slots=True)
class RoutingProblem:
    """Why the routing headers of a request are unusable (the reply becomes ``invalid``)."""

    reason: str
    message: str


def reply_target(
    headers: Iterable[tuple[str, bytes | None]] | None, default_topic: str
) -> tuple[ReplyTarget, RoutingProblem | None]:
    """The target of the reply to a request with ``headers`` (last value of a header wins)."""
    found = {name: raw for name, raw in headers or () if raw is not None}
    raw_correlation = found.get(CORRELATION_ID_HEADER)
    correlation = bytes(raw_correlation) if raw_correlation is not None else None
    if correlation is not None and len(correlation) > MAX_CORRELATION_ID_BYTES:
        # Echoing an oversized id would let a request make the worker write big headers.
        return ReplyTarget(default_topic), RoutingProblem(
            "too_long",
            f"{CORRELATION_ID_HEADER} is {len(correlation)} bytes, "
            f"the limit is {MAX_CORRELATION_ID_BYTES}",
        )
    raw_topic = found.get(REPLY_TOPIC_HEADER)
    if raw_topic is None:
        return ReplyTarget(default_topic, None, correlation), None
    try:
        topic = bytes(raw_topic).decode("utf-8")
    except UnicodeDecodeError:
        return ReplyTarget(default_topic, None, correlation), RoutingProblem(
            "invalid_value", f"{REPLY_TOPIC_HEADER} is not UTF-8"
        )
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        return ReplyTarget(default_topic, None, correlation), RoutingProblem(
            "invalid_value", f"{REPLY_TOPIC_HEADER} is not a valid topic name: {topic[:60]!r}"
        )
    raw_partition = found.get(REPLY_PARTITION_HEADER)
    if raw_partition is None:
        return ReplyTarget(topic, None, correlation), None
    try:
        partition = decode_reply_partition(bytes(raw_partition))
    except ContractError as exc:
        return ReplyTarget(default_topic, None, correlation), RoutingProblem(
            exc.reason, exc.message
        )
    return ReplyTarget(topic, partition, correlation), None
