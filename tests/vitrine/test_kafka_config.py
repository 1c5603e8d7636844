"""Kafka client settings: one module builds them all."""

from __future__ import annotations

from pathlib import Path

from vitrine.kafka_config import (
    LOW_LATENCY,
    admin_config,
    consumer_config,
    producer_config,
    reader_config,
    reply_consumer_config,
)
from vitrine.settings import VitrineSettings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("app", "encoders", "recall", "schemas", "streams", "vitrine")


def settings() -> VitrineSettings:
    return VitrineSettings(kafka_bootstrap="broker-a:9092,broker-b:9092")


def test_producers_are_durable_and_hash_keys_like_java() -> None:
    config = producer_config(settings())
    assert config["bootstrap.servers"] == "broker-a:9092,broker-b:9092"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"
    assert producer_config(settings(), **LOW_LATENCY)["linger.ms"] == 0


def test_consumers_store_offsets_only_after_the_work() -> None:
    config = consumer_config(settings(), "vitrine-embedder")
    assert config["group.id"] == "vitrine-embedder"
    assert config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"


def test_readers_and_reply_consumers_never_commit() -> None:
    for config in (reader_config(settings(), "probe"), reply_consumer_config(settings(), "x")):
        assert config["enable.auto.commit"] is False
        assert config["enable.auto.offset.store"] is False
        assert config["bootstrap.servers"] == "broker-a:9092,broker-b:9092"
    assert (
        reader_config(settings(), "probe", **{"fetch.wait.max.ms": 10})["fetch.wait.max.ms"] == 10
    )


def test_admin_can_target_one_node() -> None:
    assert admin_config(settings())["bootstrap.servers"] == "broker-a:9092,broker-b:9092"
    assert admin_config(settings(), "broker-b:9092")["bootstrap.servers"] == "broker-b:9092"


def test_no_product_module_configures_a_kafka_client_by_hand() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCT_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "kafka_config.py" and '"bootstrap.servers"' in path.read_text()
    ]
    assert offenders == []
