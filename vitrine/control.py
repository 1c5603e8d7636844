"""The control topic (``VITRINE_TOPIC_CONTROL``, compacted, one partition): small records keyed
by name — the live collection pointer and the model rollout — read from the start by whoever
needs them. Bytes only here; their contracts live in ``schemas``.

Reading to the end: the partition's high watermark is taken first and records are read until
the position reaches it, so a reader sees every record acknowledged before it started.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from vitrine.errors import InfraError
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)

#: The control topic has one partition: one total order of pointer moves.
PARTITION = 0


class ControlError(InfraError):
    """The control topic could not be read or written."""

    reason = "control_unavailable"


def _consumer(settings: VitrineSettings) -> Any:
    from confluent_kafka import Consumer

    from vitrine.kafka_config import reader_config

    # Assigned, never subscribed: the group is never joined nor committed to.
    return Consumer(
        reader_config(
            settings,
            f"vitrine-control-{uuid.uuid4().hex[:12]}",
            **{"fetch.wait.max.ms": 100, "log_level": 0},
        )
    )


class ControlReader:
    """Follows the control topic: :meth:`poll` returns the records that arrived since the
    last call (key -> value, newest per key, None for a tombstone). A missing topic reads as
    empty and is looked for again on later polls."""

    retry_missing_s = 5.0

    def __init__(self, settings: VitrineSettings) -> None:
        self._settings = settings
        self._consumer = _consumer(settings)
        self._assigned = False
        self._next_try = 0.0

    def _assign(self, timeout_s: float) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        if self._assigned:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        topic = self._settings.topic_control
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except Exception as exc:
            raise ControlError(f"control topic {topic} not readable: {exc}") from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            self._next_try = now + self.retry_missing_s
            return False
        self._consumer.assign([TopicPartition(topic, PARTITION, OFFSET_BEGINNING)])
        self._assigned = True
        return True

    def read_to_end(self, timeout_s: float = 10.0) -> dict[bytes, bytes | None]:
        """Every record up to the end of the topic as it is now (blocking up to
        ``timeout_s``); raises :class:`ControlError` when the end cannot be reached."""
        from confluent_kafka import TopicPartition

        if not self._assign(timeout_s):
            return {}
        topic = self._settings.topic_control
        deadline = time.monotonic() + timeout_s
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, PARTITION), timeout=timeout_s, cached=False
            )
        except Exception as exc:
            raise ControlError(f"end of {topic} unknown: {exc}") from exc
        found: dict[bytes, bytes | None] = {}
        if high <= low:
            return found  # empty
        while True:
            (position,) = self._consumer.position([TopicPartition(topic, PARTITION)])
            if position.offset >= high:
                return found
            if time.monotonic() > deadline:
                raise ControlError(f"{topic} not read to its end ({high}) in {timeout_s} s")
            found.update(self._take(0.2))

    def poll(self) -> dict[bytes, bytes | None]:
        """What arrived since the last call, without waiting."""
        if not self._assign(5.0):
            return {}
        return self._take(0.0)

    def _take(self, timeout_s: float) -> dict[bytes, bytes | None]:
        found: dict[bytes, bytes | None] = {}
        for message in self._consumer.consume(num_messages=500, timeout=timeout_s):
            if message.error() is not None:
                log.debug("control topic: %s", message.error())
                continue
            key = message.key()
            if key is not None:
                found[bytes(key)] = message.value()
        return found

    def close(self) -> None:
        """Leave (nothing to commit)."""
        self._consumer.close()


def read_control(settings: VitrineSettings, timeout_s: float = 10.0) -> dict[bytes, bytes | None]:
    """The control records as they are now: key -> newest value (None: tombstone)."""
    reader = ControlReader(settings)
    try:
        return reader.read_to_end(timeout_s)
    finally:
        reader.close()


def write_control(
    settings: VitrineSettings, key: bytes, value: bytes | None, timeout_s: float = 30.0
) -> None:
    """Write one control record and return once every in-sync replica has it."""
    from confluent_kafka import Producer

    from vitrine.kafka_config import producer_config

    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(
        settings.topic_control, key=key, value=value, partition=PARTITION, on_delivery=delivered
    )
    left = producer.flush(timeout_s)
    if left or errors:
        detail = errors[0] if errors else f"not acknowledged in {timeout_s} s"
        topic = settings.topic_control
        raise ControlError(f"control record {key!r} not written to {topic}: {detail}")
