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


def _running(service: LocalKafka | LocalMilvus, managed: bool, where: str) -> Iterator[str]:
    """Yield ``where`` once ``service`` answers; start (and later stop) it only if it is ours."""
    started = False
    if managed and not service.answering():
        started = service.start()
    elif not service.answering():
        pytest.fail(f"external service at {where} does not answer")
    yield where
    if started:
        service.stop()


@pytest.fixture(scope="session")
def kafka(infra_settings: InfraSettings) -> Iterator[str]:
    """Bootstrap servers of a real, answering Kafka broker."""
    yield from _running(
        LocalKafka(infra_settings), infra_settings.manages_kafka, infra_settings.bootstrap_servers
    )


@pytest.fixture(scope="session")
def milvus(infra_settings: InfraSettings) -> Iterator[str]:
    """URI of a real, answering Milvus (the local milvus-lite server by default)."""
    yield from _running(
        LocalMilvus(infra_settings), infra_settings.manages_milvus, infra_settings.milvus_endpoint
    )


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
