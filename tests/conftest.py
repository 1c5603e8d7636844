"""Shared fixtures. Integration fixtures start real services only when a test asks for them.

The broker and the milvus-lite server are those of the default settings (what `vitrine infra up`
starts, what `.ci/run` starts before the suite). When they are not running, the session fixture
starts them and stops them at the end; when VITRINE_KAFKA_BOOTSTRAP / VITRINE_MILVUS_URI point at
external services, those are used as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from vitrine.infra.kafka import LocalKafka
from vitrine.infra.milvus import LocalMilvus
from vitrine.settings import InfraSettings, load


@pytest.fixture(scope="session")
def infra_settings() -> InfraSettings:
    """The settings the integration tests connect with."""
    return load(InfraSettings)


@pytest.fixture(scope="session")
def kafka(infra_settings: InfraSettings) -> Iterator[str]:
    """Bootstrap servers of a real, answering Kafka broker."""
    broker = LocalKafka(infra_settings)
    started = False
    if infra_settings.manages_kafka and not broker.answering():
        started = broker.start()
    elif not broker.answering():
        pytest.fail(f"external Kafka at {infra_settings.bootstrap_servers} does not answer")
    yield infra_settings.bootstrap_servers
    if started:
        broker.stop()


@pytest.fixture(scope="session")
def milvus(infra_settings: InfraSettings) -> Iterator[str]:
    """URI of a real, answering Milvus (the local milvus-lite server by default)."""
    server = LocalMilvus(infra_settings)
    started = False
    if infra_settings.manages_milvus and not server.answering():
        started = server.start()
    elif not server.answering():
        pytest.fail(f"external Milvus at {infra_settings.milvus_endpoint} does not answer")
    yield infra_settings.milvus_endpoint
    if started:
        server.stop()


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses: topics, groups and collections are per test."""
    return f"t_{uuid.uuid4().hex[:12]}"
