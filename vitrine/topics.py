"""`vitrine topics create|list`: topic administration with the confluent-kafka AdminClient."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from vitrine.errors import BrokerUnavailable, InfraError
from vitrine.settings import InfraSettings, VitrineSettings, load

# Dead letters are kept longer than data: they wait for a person.
DLQ_RETENTION_FACTOR = 4
#: Topics kept by key, not by time: the catalogue's state and the control records.
COMPACTED_ROLES = frozenset({"state", "control"})
COMPACTED_CONFIG = {
    "cleanup.policy": "compact",
    "retention.ms": "-1",
    "delete.retention.ms": "86400000",
    "min.cleanable.dirty.ratio": "0.1",
}


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: name, partitions and topic-level configs."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str]


def topic_specs(settings: VitrineSettings) -> list[TopicSpec]:
    """The topics Vitrine needs, with partitions and retention from ``settings`` (pure)."""
    retention = settings.topic_retention_ms
    dlq_retention = -1 if retention < 0 else retention * DLQ_RETENTION_FACTOR
    specs = []
    for role, name in settings.topics.items():
        config = {
            "retention.ms": str(dlq_retention if role == "dlq" else retention),
            # With acks=all, a write is acknowledged only once this many replicas hold it.
            "min.insync.replicas": str(settings.topic_min_insync_replicas),
        }
        if role in {"recall_requests", "recall_replies"}:
            # Requests and replies are worthless after their deadline; keep them briefly.
            config["retention.ms"] = str(min(retention, 3_600_000)) if retention > 0 else "3600000"
        partitions = settings.topic_partitions
        if role in COMPACTED_ROLES:
            # The newest record per key is kept for ever: the catalogue a re-embed reads, the
            # live pointer every worker follows. Tombstones go after a day.
            config = {**config, **COMPACTED_CONFIG}
            if role == "control":
                partitions = 1  # one total order of pointer moves
        specs.append(TopicSpec(name, partitions, settings.topic_replication, config))
    return specs


def admin_client(settings: VitrineSettings, timeout_s: float = 10.0):
    """An AdminClient that has answered a metadata request, or :class:`BrokerUnavailable`."""
    from confluent_kafka.admin import AdminClient

    from vitrine.kafka_config import admin_config

    admin = AdminClient(admin_config(settings))
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception as exc:
        raise BrokerUnavailable(
            f"Kafka at {settings.bootstrap_servers} did not answer within {timeout_s:.0f} s "
            f"({exc}); start it with `vitrine infra up` or fix VITRINE_KAFKA_BOOTSTRAP"
        ) from exc
    return admin


def ensure_topics(
    settings: VitrineSettings, specs: list[TopicSpec] | None = None, timeout_s: float = 10.0
) -> dict[str, str]:
    """Create missing topics; return name -> "created" | "exists". Idempotent."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    specs = topic_specs(settings) if specs is None else specs
    admin = admin_client(settings, timeout_s=timeout_s)
    metadata = admin.list_topics(timeout=10).topics
    existing = set(metadata)
    for spec in specs:
        if spec.name in metadata and len(metadata[spec.name].partitions) != spec.partitions:
            # The embedder's version table is co-partitioned with the events topic; a silent
            # mismatch would surface much later as a faust error.
            raise InfraError(
                f"topic {spec.name!r} exists with {len(metadata[spec.name].partitions)} "
                f"partitions, settings say {spec.partitions}: set VITRINE_TOPIC_PARTITIONS to "
                "match, or use other topic names"
            )
    result = {s.name: "exists" for s in specs if s.name in existing}
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return result
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication,
                config=s.config,
            )
            for s in missing
        ],
        operation_timeout=30,
        request_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result()
            result[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise InfraError(f"creating topic {name!r} failed: {err.str()}") from exc
    _await_metadata(admin, [s.name for s in missing], timeout_s)
    return result


def _await_metadata(admin: Any, names: list[str], timeout_s: float) -> None:
    """Wait until the broker serves metadata for ``names``: a caller that checks or uses a
    topic right after creating it must not find it missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(n in topics and topics[n].error is None and topics[n].partitions for n in names):
            return
        if time.monotonic() >= deadline:
            raise InfraError(f"topics {names} created but not in the metadata after {timeout_s} s")
        time.sleep(0.05)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `vitrine topics`."""
    topics = sub.add_parser(
        "topics",
        help="create or list Vitrine's Kafka topics",
        description="Create the topics Vitrine uses (names, partitions and retention from "
        "VITRINE_TOPIC_* settings). Safe to run again: existing topics are left as they are.",
    )
    verbs = topics.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser(
        "create",
        help="create missing topics (idempotent)",
        description="Create the events, embedded, dead-letter, recall request and reply topics "
        "and the compacted state and control topics that do not exist yet; an existing topic "
        "with another partition count is an error.",
    )
    create.set_defaults(func=cmd_create)
    listing = verbs.add_parser(
        "list",
        help="show Vitrine's topics and their partitions",
        description="List the topics named by the VITRINE_TOPIC_* settings with their "
        "partition counts, or `missing`.",
    )
    listing.set_defaults(func=cmd_list)


def cmd_create(args: argparse.Namespace) -> int:
    """Create the topics."""
    settings = load(InfraSettings)
    for name, state in ensure_topics(settings).items():
        print(f"{name:28} {state}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List the topics with partition counts."""
    settings = load(InfraSettings)
    metadata = admin_client(settings).list_topics(timeout=10)
    for spec in topic_specs(settings):
        topic = metadata.topics.get(spec.name)
        shown = f"{len(topic.partitions)} partitions" if topic else "missing"
        print(f"{spec.name:28} {shown}")
    return 0
