"""Kafka request-reply routing headers of recall (the Spring Kafka convention).

They are headers, not payload, so that JVM services using ReplyingKafkaTemplate can call the
recall worker unchanged: the request names its reply topic (and optionally partition), and
the reply echoes the correlation id bytes untouched. This module writes them; the one reader
is ``recall.routing.reply_target`` (lenient: a reply goes out whenever one can be routed).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import limits
from .errors import ContractError, Reason

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
