"""Shared fixtures. Integration fixtures start real services only when a test asks for them.

The broker and the milvus-lite server are those of the default settings (what `vitrine infra up`
starts, what `.ci/run` starts before the suite). When they are not running, the session fixture
starts them and stops them at the end; when VITRINE_KAFKA_BOOTSTRAP / VITRINE_MILVUS_URI point at
external services, those are used as they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def ensure_debian_package(binary: str, package: str) -> str:
    """Path of ``binary``; installs Debian's ``package`` first when it is missing (as root)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{binary} is missing and cannot be installed here: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=env,
        timeout=600,
    )
    found = shutil.which(binary)
    assert found, f"{package} installed but {binary} is still not on PATH"
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package `prometheus`)."""
    return ensure_debian_package("promtool", "prometheus")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of the Prometheus server (Debian package `prometheus`)."""
    return ensure_debian_package("prometheus", "prometheus")
