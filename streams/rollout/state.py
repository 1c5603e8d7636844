"""Reading the catalogue's state topic: the job's tail (resumable through its consumer group's
committed offsets) and a one-off read of the whole catalogue (``cutover``)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from schemas import ContractError, decode_catalogue_entry
from streams.rollout.plan import Catalogue, StateRecord
from vitrine.errors import InfraError
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)


class StateUnavailable(InfraError):
    """The state topic could not be read."""

    reason = "state_unavailable"


def _consumer(settings: VitrineSettings, group_id: str) -> Any:
    from confluent_kafka import Consumer

    from vitrine.kafka_config import reader_config

    # The job commits its position itself, after the rows are in Milvus.
    return Consumer(
        reader_config(
            settings,
            group_id,
            **{"auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, "log_level": 0},
        )
    )


def partitions_of(consumer: Any, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of ``topic``; :class:`StateUnavailable` when it does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise StateUnavailable(
            f"state topic {topic} does not exist: create it with `vitrine topics create` (the "
            "embedder writes it once rows are durable)"
        )
    return sorted(metadata.partitions)


def end_offsets(settings: VitrineSettings, timeout_s: float = 10.0) -> list[int]:
    """High watermark of each state partition (index = partition)."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(settings, f"vitrine-state-{uuid.uuid4().hex[:12]}")
    try:
        topic = settings.topic_state
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions_of(consumer, topic, timeout_s)
        ]
    finally:
        consumer.close()


class StateTail:
    """The rollout job's reader: assigned every partition, resuming at the group's committed
    offsets (the start of the topic the first time); commits only what it is told."""

    def __init__(self, settings: VitrineSettings, group_id: str, from_start: bool = False) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._settings = settings
        self._topic = settings.topic_state
        self._consumer = _consumer(settings, group_id)
        self.partitions = partitions_of(self._consumer, self._topic)
        tps = [TopicPartition(self._topic, p) for p in self.partitions]
        committed = self._consumer.committed(tps, timeout=10)
        #: Per partition, the offset processing has reached (committed).
        self.positions: dict[int, int] = {}
        assignment = []
        for tp in committed:
            start = tp.offset if tp.offset >= 0 and not from_start else OFFSET_BEGINNING
            if start != OFFSET_BEGINNING:
                self.positions[tp.partition] = start
            assignment.append(TopicPartition(self._topic, tp.partition, start))
        self._consumer.assign(assignment)

    def read(self, max_records: int, timeout_s: float) -> list[StateRecord]:
        """Up to ``max_records`` records (waiting at most ``timeout_s`` for the first)."""
        out = []
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            if message.error() is not None:
                log.warning("state topic: %s", message.error())
                continue
            if message.key() is None:
                continue  # not a listing's record; nothing to do with it
            out.append(
                StateRecord(message.partition(), message.offset(), message.key(), message.value())
            )
        return out

    def read_positions(self) -> dict[int, int]:
        """Per partition, the offset of the next record :meth:`read` returns (absent: none read
        and none committed)."""
        from confluent_kafka import TopicPartition

        tps = self._consumer.position([TopicPartition(self._topic, p) for p in self.partitions])
        read = {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
        return {**self.positions, **read}

    def ends(self) -> list[int]:
        """High watermarks now (index = partition)."""
        from confluent_kafka import TopicPartition

        return [
            self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=10, cached=False
            )[1]
            for p in self.partitions
        ]

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit ``offsets`` (partition -> next offset) synchronously; retried until Kafka
        accepts (the records before them are durable in the candidate)."""
        from confluent_kafka import TopicPartition

        if not offsets:
            return
        tps = [TopicPartition(self._topic, p, o) for p, o in offsets.items()]
        delay = 0.2
        while True:
            try:
                self._consumer.commit(offsets=tps, asynchronous=False)
                break
            except Exception as exc:
                log.warning("commit of the rollout's position failed (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        for p, o in offsets.items():
            self.positions[p] = max(self.positions.get(p, 0), o)

    def close(self) -> None:
        """Leave without committing anything more."""
        self._consumer.close()


def committed_positions(settings: VitrineSettings, group_id: str) -> dict[int, int]:
    """The job group's committed offset per state partition (absent: nothing committed)."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(settings, group_id)
    try:
        topic = settings.topic_state
        tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
        return {
            tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10) if tp.offset >= 0
        }
    finally:
        consumer.close()


def read_catalogue(settings: VitrineSettings, timeout_s: float = 120.0) -> Catalogue:
    """The whole state topic to its current end, compacted in memory."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = _consumer(settings, f"vitrine-state-{uuid.uuid4().hex[:12]}")
    topic = settings.topic_state
    catalogue = Catalogue()
    try:
        partitions = partitions_of(consumer, topic)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while True:
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            if all(
                tp.offset >= ends[tp.partition][1] or ends[tp.partition][1] <= ends[tp.partition][0]
                for tp in positions
            ):
                break
            if time.monotonic() > deadline:
                raise StateUnavailable(f"{topic} not read to its end in {timeout_s:.0f} s")
            for message in consumer.consume(num_messages=2000, timeout=0.5):
                if message.error() is None and message.key() is not None:
                    _apply(catalogue, message.key(), message.value())
        return catalogue
    finally:
        consumer.close()


def _apply(catalogue: Catalogue, key: bytes, value: bytes | None) -> None:
    listing = key.decode("utf-8", "replace")
    if value is None:
        catalogue.apply(listing, None)
        return
    try:
        catalogue.apply(listing, decode_catalogue_entry(value).version)
    except ContractError as exc:
        log.warning("state record of %s unreadable: %s", listing, exc.reason)


def listing_versions(
    client: Any, collection: str, ids: Sequence[str] | None = None
) -> dict[str, int]:
    """listing -> version of the rows of ``collection`` (all of them, or those of ``ids``)."""
    if ids is not None:
        if not ids:
            return {}
        rows = client.query(collection, ids=list(ids), output_fields=["listing_id", "version"])
        return {str(r["listing_id"]): int(r["version"]) for r in rows}
    out: dict[str, int] = {}
    iterator = client.query_iterator(
        collection, batch_size=2000, filter="version >= 0", output_fields=["listing_id", "version"]
    )
    try:
        while batch := iterator.next():
            out.update({str(r["listing_id"]): int(r["version"]) for r in batch})
    finally:
        iterator.close()
    return out
