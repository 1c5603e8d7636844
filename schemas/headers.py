"""Kafka request-reply routing headers of recall (the Spring Kafka convention).

They are headers, not payload, so that JVM services using ReplyingKafkaTemplate can call the
recall worker unchanged: the request names its reply topic (and optionally partition), and
the reply echoes the correlation id bytes untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import limits
from .errors import ContractError, Reason
from .registry import strict_regex

REPLY_TOPIC_HEADER = "kafka_replyTopic"
CORRELATION_ID_HEADER = "kafka_correlationId"
REPLY_PARTITION_HEADER = "kafka_replyPartition"
MAX_CORRELATION_ID_BYTES = 256
_CONTRACT = "recall_headers"


def _fail(message: str, reason: Reason, header: str) -> ContractError:
    return ContractError(f"{_CONTRACT}: {message}", reason=reason, field=header, contract=_CONTRACT)


def encode_reply_partition(partition: int) -> bytes:
    """A partition number as the 4-byte big-endian int Spring Kafka writes."""
    if not 0 <= partition <= limits.MAX_PARTITION:
        raise ValueError(f"partition must be in 0..{limits.MAX_PARTITION}, got {partition}")
    return partition.to_bytes(4, "big", signed=True)


def decode_reply_partition(raw: bytes) -> int:
    """The 4-byte big-endian partition header -> int. Raises ContractError."""
    if len(raw) != 4:
        raise _fail(
            f"{REPLY_PARTITION_HEADER} must be 4 bytes, got {len(raw)}",
            Reason.INVALID_VALUE,
            REPLY_PARTITION_HEADER,
        )
    partition = int.from_bytes(raw, "big", signed=True)
    if partition < 0:
        raise _fail(
            f"{REPLY_PARTITION_HEADER} must not be negative, got {partition}",
            Reason.OUT_OF_RANGE,
            REPLY_PARTITION_HEADER,
        )
    return partition


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where and how to answer one recall request."""

    topic: str
    correlation_id: bytes
    partition: int | None = None

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]] | None) -> ReplyRoute:
        """Read the routing headers of a request (last value wins). Raises ContractError."""
        found = {name: raw for name, raw in headers or () if raw is not None}
        for name in (REPLY_TOPIC_HEADER, CORRELATION_ID_HEADER):
            if name not in found:
                raise _fail(f"header {name} is required", Reason.MISSING_FIELD, name)
        try:
            topic = found[REPLY_TOPIC_HEADER].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(
                f"{REPLY_TOPIC_HEADER} is not UTF-8", Reason.INVALID_VALUE, REPLY_TOPIC_HEADER
            ) from exc
        if not strict_regex(limits.TOPIC_PATTERN).search(topic):
            raise _fail(
                f"{REPLY_TOPIC_HEADER} is not a valid topic name: {topic[:60]!r}",
                Reason.INVALID_VALUE,
                REPLY_TOPIC_HEADER,
            )
        correlation_id = bytes(found[CORRELATION_ID_HEADER])
        if not 1 <= len(correlation_id) <= MAX_CORRELATION_ID_BYTES:
            raise _fail(
                f"{CORRELATION_ID_HEADER} must be 1..{MAX_CORRELATION_ID_BYTES} bytes, "
                f"got {len(correlation_id)}",
                Reason.TOO_LONG if correlation_id else Reason.INVALID_VALUE,
                CORRELATION_ID_HEADER,
            )
        raw_partition = found.get(REPLY_PARTITION_HEADER)
        partition = None if raw_partition is None else decode_reply_partition(raw_partition)
        return cls(topic=topic, correlation_id=correlation_id, partition=partition)

    def request_headers(self) -> list[tuple[str, bytes]]:
        """Headers a caller puts on its request."""
        out = [
            (REPLY_TOPIC_HEADER, self.topic.encode("utf-8")),
            (CORRELATION_ID_HEADER, self.correlation_id),
        ]
        if self.partition is not None:
            out.append((REPLY_PARTITION_HEADER, encode_reply_partition(self.partition)))
        return out

    def reply_headers(self) -> list[tuple[str, bytes]]:
        """Headers the worker puts on its reply: the correlation id, echoed unchanged."""
        return [(CORRELATION_ID_HEADER, self.correlation_id)]
