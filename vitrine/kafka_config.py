"""librdkafka configuration shared by Vitrine's confluent-kafka producers and consumers.

Producers of keyed topics shared with faust (aiokafka, Java clients) must place keys on the same
partitions: librdkafka's default partitioner (consistent_random, CRC32) differs from the Java /
aiokafka one, so every producer here uses ``murmur2_random``.
"""

from __future__ import annotations

from typing import Any

from vitrine.settings import VitrineSettings

KEYED_PARTITIONER = "murmur2_random"

#: Request-reply traffic (recall) is latency-bound, not throughput-bound: send at once (no
#: linger batching), and without Nagle's algorithm holding small writes back for an ACK.
LOW_LATENCY: dict[str, Any] = {"linger.ms": 0, "socket.nagle.disable": True}


def producer_config(settings: VitrineSettings, **overrides: Any) -> dict[str, Any]:
    """Durable, idempotent producer settings with Java-compatible key hashing."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "partitioner": KEYED_PARTITIONER,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "log_level": 3,
    }
    config.update(overrides)
    return config


def consumer_config(settings: VitrineSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """At-least-once consumer settings: offsets are stored only after the work is done."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group_id,
        "socket.nagle.disable": True,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "log_level": 3,
    }
    config.update(overrides)
    return config


def reply_consumer_config(settings: VitrineSettings, instance: str) -> dict[str, Any]:
    """A consumer that is only ever assigned partitions (never joins its group), no commits:
    the recall client's reply reader."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"vitrine-recall-client-{instance}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "socket.nagle.disable": True,
        # A fetch returns as soon as one byte is there (fetch.min.bytes=1); this only bounds
        # how long an empty fetch is parked on the broker.
        "fetch.wait.max.ms": 100,
        "log_level": 3,
    }


def reader_config(settings: VitrineSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that reads by assignment and never commits by itself (monitors, lag probes,
    tails, jobs that commit explicitly once their work is durable): ``group_id`` names whose
    committed offsets it reads."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "log_level": 3,
    }
    config.update(overrides)
    return config


def admin_config(settings: VitrineSettings, bootstrap: str | None = None) -> dict[str, Any]:
    """AdminClient settings (``bootstrap``: one node instead of the cluster, for probes)."""
    return {"bootstrap.servers": bootstrap or settings.bootstrap_servers, "log_level": 0}


def faust_kafka_options(settings: VitrineSettings, session_timeout_s: float) -> dict[str, Any]:
    """Kafka options of a faust-streaming app (aiokafka transport): the same broker, durable
    producer acks (``-1`` = all) and earliest reset as the librdkafka clients above."""
    return {
        "broker": [f"kafka://{hp.strip()}" for hp in settings.bootstrap_servers.split(",")],
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": session_timeout_s,
        "broker_heartbeat_interval": max(1.0, session_timeout_s / 6),
    }
