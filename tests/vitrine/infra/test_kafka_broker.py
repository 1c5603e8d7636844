"""The real broker: keyed messages round-trip and land where aiokafka's murmur2 puts them."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer

from vitrine.kafka_config import producer_config
from vitrine.settings import InfraSettings, load
from vitrine.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 6


def java_partition(key: bytes, partitions: int) -> int:
    """The partition the Java client, aiokafka and faust choose for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes, int]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[bytes, bytes, int]] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < expected:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.extend((r.key, r.value, r.partition) for r in records)
    finally:
        await consumer.stop()
    return got


def test_keyed_messages_round_trip_with_java_partitioning(kafka: str, unique_name: str) -> None:
    settings = load(InfraSettings, kafka_bootstrap=kafka)
    topic = f"{unique_name}.keyed"
    ensure_topics(settings, [TopicSpec(topic, PARTITIONS, 1, {"retention.ms": "600000"})])
    producer = Producer(producer_config(settings))
    sent = {f"listing-{i}".encode(): f'{{"n": {i}}}'.encode() for i in range(300)}
    reported: dict[bytes, int] = {}

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        reported[msg.key()] = msg.partition()

    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0

    received = asyncio.run(_consume_all(kafka, topic, len(sent)))

    assert {k: v for k, v, _ in received} == sent
    assert len(received) == len(sent)
    for key, _, partition in received:
        assert partition == java_partition(key, PARTITIONS) == reported[key]
    # The keys really spread: a partitioner that sends everything to one partition fails here.
    assert len({p for _, _, p in received}) == PARTITIONS
