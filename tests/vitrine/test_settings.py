"""Settings: defaults, environment, TOML file, and errors that name the bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitrine.errors import ConfigError
from vitrine.settings import InfraSettings, load


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


def test_defaults_use_local_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path))
    s = load(InfraSettings)
    assert s.manages_kafka and s.manages_milvus
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.milvus_endpoint == "http://127.0.0.1:19540"
    assert s.cache == tmp_path / "cache"
    assert s.topics == {
        "events": "listings.events",
        "embedded": "listings.embedded",
        "dlq": "listings.events.dlq",
        "recall_requests": "recall.requests",
        "recall_replies": "recall.replies",
        "state": "listings.state",
        "control": "vitrine.control",
    }


def test_external_services_are_not_managed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("VITRINE_MILVUS_URI", "http://milvus:19530")
    s = load(InfraSettings)
    assert not s.manages_kafka and not s.manages_milvus
    assert s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.milvus_endpoint == "http://milvus:19530"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("VITRINE_KAFKA_PORT", "abc", "VITRINE_KAFKA_PORT"),
        ("VITRINE_KAFKA_PORT", "80", "VITRINE_KAFKA_PORT"),
        ("VITRINE_KAFKA_BOOTSTRAP", "no-port-here", "VITRINE_KAFKA_BOOTSTRAP"),
        ("VITRINE_MILVUS_URI", "milvus:19530", "VITRINE_MILVUS_URI"),
        ("VITRINE_TOPIC_EVENTS", "bad topic!", "VITRINE_TOPIC_EVENTS"),
        ("VITRINE_TOPIC_PARTITIONS", "0", "VITRINE_TOPIC_PARTITIONS"),
        ("VITRINE_LOG_LEVEL", "LOUD", "VITRINE_LOG_LEVEL"),
        ("VITRINE_MILVUS_COLLECTION", "has-dash", "VITRINE_MILVUS_COLLECTION"),
    ],
)
def test_invalid_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load(InfraSettings)
    assert info.value.reason == "invalid_config"
    assert expected in str(info.value)
    assert repr(value) in str(info.value)


def test_toml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vitrine.toml"
    config.write_text('kafka_port = 29092\ntopic_partitions = 8\nlog_level = "debug"\n')
    monkeypatch.setenv("VITRINE_CONFIG", str(config))
    monkeypatch.setenv("VITRINE_TOPIC_PARTITIONS", "2")
    s = load(InfraSettings)
    assert s.kafka_port == 29092
    assert s.topic_partitions == 2
    assert s.log_level == "DEBUG"


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="VITRINE_CONFIG"):
        load(InfraSettings)


def test_settings_are_frozen() -> None:
    s = load(InfraSettings)
    with pytest.raises(ValueError, match="frozen"):
        s.kafka_port = 1  # type: ignore[misc]


def test_replication_follows_the_local_cluster_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrine.settings import InfraSettings

    unset = ("KAFKA_BROKERS", "KAFKA_BOOTSTRAP", "TOPIC_REPLICATION", "TOPIC_MIN_INSYNC_REPLICAS")
    for name in unset:
        monkeypatch.delenv(f"VITRINE_{name}", raising=False)
    one = load(InfraSettings)
    assert (one.kafka_brokers, one.topic_replication, one.topic_min_insync_replicas) == (1, 1, 1)
    monkeypatch.setenv("VITRINE_KAFKA_BROKERS", "3")
    three = load(InfraSettings)
    assert (three.topic_replication, three.topic_min_insync_replicas) == (3, 2)
    assert len(three.bootstrap_servers.split(",")) == 3
    explicit = load(InfraSettings, topic_replication=2)
    assert (explicit.topic_replication, explicit.topic_min_insync_replicas) == (2, 1)
    external = load(InfraSettings, kafka_bootstrap="kafka:9092")
    assert (external.topic_replication, external.bootstrap_servers) == (1, "kafka:9092")
    with pytest.raises(ConfigError, match="VITRINE_TOPIC_REPLICATION"):
        load(InfraSettings, topic_replication=4)
    with pytest.raises(ConfigError, match="MIN_INSYNC"):
        load(InfraSettings, topic_replication=2, topic_min_insync_replicas=3)


def test_milvus_kind_is_lite_or_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrine.infra.milvus import MilvusLite, MilvusStandalone, local_milvus
    from vitrine.settings import InfraSettings

    monkeypatch.delenv("VITRINE_MILVUS_URI", raising=False)
    monkeypatch.delenv("VITRINE_MILVUS_KIND", raising=False)
    assert load(InfraSettings).milvus_is_lite
    assert isinstance(local_milvus(load(InfraSettings)), MilvusLite)
    monkeypatch.setenv("VITRINE_MILVUS_KIND", "server")
    server = load(InfraSettings)
    assert not server.milvus_is_lite and isinstance(local_milvus(server), MilvusStandalone)
    assert len(set(local_milvus(server).ports())) == 12  # proxy, 9 components, metrics, etcd peer
    monkeypatch.setenv("VITRINE_MILVUS_KIND", "docker")
    with pytest.raises(ConfigError, match="VITRINE_MILVUS_KIND"):
        load(InfraSettings)


def test_names_for_gives_every_topic_and_the_collection_a_name_of_its_own() -> None:
    names = InfraSettings.names_for("t_abc")
    settings = load(InfraSettings, **names)
    defaults = load(InfraSettings)
    assert settings.milvus_collection == "t_abc"
    for role, topic in settings.topics.items():
        assert topic.startswith("t_abc.") and topic != defaults.topics[role]
    assert len(set(settings.topics.values())) == len(settings.topics)
