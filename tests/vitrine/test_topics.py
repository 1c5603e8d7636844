"""Topic administration: the specs (pure) and creation against the real broker."""

from __future__ import annotations

import time

import pytest

from vitrine.errors import BrokerUnavailable
from vitrine.settings import InfraSettings, load
from vitrine.topics import TopicSpec, ensure_topics, topic_specs


def test_specs_follow_settings() -> None:
    s = load(InfraSettings, topic_partitions=6, topic_retention_ms=86_400_000)
    specs = {spec.name: spec for spec in topic_specs(s)}
    assert set(specs) == set(s.topics.values())
    assert all(spec.partitions == 6 for name, spec in specs.items() if name != s.topic_control)
    assert specs["listings.events"].config["retention.ms"] == "86400000"
    # Dead letters wait longer for a person; request/reply traffic is short-lived.
    assert int(specs["listings.events.dlq"].config["retention.ms"]) > 86_400_000
    assert int(specs["recall.requests"].config["retention.ms"]) <= 3_600_000


def test_state_and_control_topics_are_compacted() -> None:
    s = load(InfraSettings, topic_partitions=6)
    specs = {spec.name: spec for spec in topic_specs(s)}
    state, control = specs["listings.state"], specs["vitrine.control"]
    for spec in (state, control):
        assert spec.config["cleanup.policy"] == "compact"
        assert spec.config["retention.ms"] == "-1"  # kept by key, never by age
    # The state is keyed like the events (same partitions); the control records are one log.
    assert state.partitions == 6
    assert control.partitions == 1


def test_infinite_retention_stays_infinite_for_dlq() -> None:
    s = load(InfraSettings, topic_retention_ms=-1)
    dlq = next(spec for spec in topic_specs(s) if spec.name == s.topic_dlq)
    assert dlq.config["retention.ms"] == "-1"


def test_unreachable_broker_is_a_clear_error() -> None:
    s = load(InfraSettings, kafka_bootstrap="127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        ensure_topics(s, timeout_s=2)
    assert info.value.reason == "broker_unavailable"
    assert "127.0.0.1:1" in str(info.value)
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_create_is_idempotent(kafka: str, unique_name: str) -> None:
    from confluent_kafka.admin import AdminClient

    s = load(InfraSettings, kafka_bootstrap=kafka)
    specs = [
        TopicSpec(f"{unique_name}.a", 3, 1, {"retention.ms": "60000"}),
        TopicSpec(f"{unique_name}.b", 2, 1, {"retention.ms": "60000"}),
    ]
    admin = AdminClient({"bootstrap.servers": kafka})
    try:
        assert ensure_topics(s, specs) == {specs[0].name: "created", specs[1].name: "created"}
        assert ensure_topics(s, specs) == {specs[0].name: "exists", specs[1].name: "exists"}
        topics = admin.list_topics(timeout=10).topics
        assert len(topics[specs[0].name].partitions) == 3
        assert len(topics[specs[1].name].partitions) == 2
    finally:
        for future in admin.delete_topics([sp.name for sp in specs]).values():
            future.result()


@pytest.mark.integration
def test_partition_mismatch_is_an_error(kafka: str, unique_name: str) -> None:
    from confluent_kafka.admin import AdminClient

    from vitrine.errors import InfraError

    s = load(InfraSettings, kafka_bootstrap=kafka)
    name = f"{unique_name}.p"
    ensure_topics(s, [TopicSpec(name, 2, 1, {})])
    try:
        with pytest.raises(InfraError, match="exists with 2 partitions, settings say 3"):
            ensure_topics(s, [TopicSpec(name, 3, 1, {})])
    finally:
        admin = AdminClient({"bootstrap.servers": kafka})
        for future in admin.delete_topics([name]).values():
            future.result()
