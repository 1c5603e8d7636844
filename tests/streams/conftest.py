"""Fixtures of the embedder tests: a stub model, a loopback image server, per-test topics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import EmbedderSettings
from tests.streams.harness import ImageServer
from tests.stub_model import build_stub_model
from vitrine.settings import InfraSettings, load
from vitrine.topics import ensure_topics


@pytest.fixture(scope="session")
def stub_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory in the real format (random linear towers)."""
    return build_stub_model(tmp_path_factory.mktemp("model") / "stub")


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    """An HTTP server on 127.0.0.1 serving whatever the test puts in ``images``."""
    server = ImageServer()
    yield server
    server.close()


@pytest.fixture
def embedder_settings(
    kafka: str, milvus: str, infra_settings: InfraSettings, unique_name: str, stub_model: Path
) -> EmbedderSettings:
    """Settings on per-test topics, collection and consumer group, with the topics created."""
    settings = load(
        EmbedderSettings,
        kafka_bootstrap=infra_settings.bootstrap_servers,
        milvus_uri=infra_settings.milvus_endpoint,
        **EmbedderSettings.names_for(unique_name),
        topic_partitions=2,
        app_id=f"{unique_name}-embedder",
        model_dir=stub_model,
        allow_loopback_images=True,
        metrics_port=0,
        batch_size=128,
        batch_wait_ms=20,
        fetch_backoff_s=0.05,
        fetch_attempts=2,
        milvus_backoff_s=0.2,
        commit_interval_s=0.2,
        fetch_max_bytes=64 * 1024,
        session_timeout_s=6.0,
    )
    ensure_topics(settings)
    return settings
