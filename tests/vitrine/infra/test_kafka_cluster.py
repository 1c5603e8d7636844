"""A three-broker cluster started by `LocalKafka`: one broker SIGKILLed mid-stream and restarted.

The embedder runs as a black box (`python -m app.cli embedder`); events are produced with
the project's producer settings (idempotent, acks=all) to topics of replication 3 and
min.insync.replicas 2. After the broker comes back: every acknowledged event is reflected in
Milvus exactly once at its final version (no loss, no duplicate, no stale row), the consumer
group's lag is 0, and the recall worker answered every request sent while it was down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall import RecallClient, RecallSettings
from recall.worker import RecallWorker, open_index
from schemas import RecallStatus
from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, produce
from tests.streams.processes import committed_total, embedder_env, paced, start_embedder
from tests.streams.test_embedder import check_outcome
from vitrine.infra.kafka import LocalKafka
from vitrine.settings import InfraSettings, load
from vitrine.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKER_PORT, CONTROLLER_PORT = 29300, 29301  # nodes at +0, +10, +20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """Three KRaft nodes on a home and ports of their own; stopped at the end."""
    shared = load(InfraSettings)
    settings = load(
        InfraSettings,
        home=tmp_path_factory.mktemp("cluster") / "home",
        cache_dir=shared.cache,  # the jars are already fetched: no network
        kafka_brokers=3,
        kafka_port=BROKER_PORT,
        kafka_controller_port=CONTROLLER_PORT,
        infra_start_timeout_s=180,
    )
    local = LocalKafka(settings)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory in the real format (random linear towers)."""
    from tests.stub_model import build_stub_model

    return build_stub_model(tmp_path_factory.mktemp("model") / "stub")


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    """The loopback image server of the scenario."""
    server = ImageServer()
    yield server
    server.close()


def test_cluster_settings_give_replicated_topics(cluster: LocalKafka) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    settings = cluster.settings
    assert (settings.topic_replication, settings.topic_min_insync_replicas) == (3, 2)
    assert len(settings.bootstrap_servers.split(",")) == 3
    ensure_topics(settings)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 0})
    topic = admin.list_topics(settings.topic_events, timeout=10).topics[settings.topic_events]
    assert {len(p.replicas) for p in topic.partitions.values()} == {3}
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic_events)
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["min.insync.replicas"].value == "2"


def test_a_broker_killed_mid_stream_loses_nothing(
    cluster: LocalKafka,
    milvus: str,
    model_dir: Path,
    images: ImageServer,
    unique_name: str,
    tmp_path: Path,
) -> None:
    settings = load(
        EmbedderSettings,
        kafka_bootstrap=cluster.settings.bootstrap_servers,
        topic_replication=3,
        topic_min_insync_replicas=2,
        milvus_uri=milvus,
        **EmbedderSettings.names_for(unique_name),
        topic_partitions=2,
        app_id=f"{unique_name}-embedder",
        model_dir=model_dir,
        allow_loopback_images=True,
        metrics_port=0,
        fetch_max_bytes=64 * 1024,
    )
    ensure_topics(settings)
    sc = scenario.build(images, total=1200, seed=31, cap=settings.fetch_max_bytes)
    feeder_error: list[BaseException] = []

    def feed() -> None:
        try:  # produce() asserts that every record was acknowledged (acks=all)
            produce(settings, settings.topic_events, paced(sc.records, 50.0))
        except BaseException as exc:
            feeder_error.append(exc)

    embedder = start_embedder(
        embedder_env(settings, TOPIC_REPLICATION="3", TOPIC_MIN_INSYNC_REPLICAS="2"),
        tmp_path / "embedder.log",
    )
    feeder = threading.Thread(target=feed, daemon=True)
    recall_settings = load(
        RecallSettings,
        **{
            k: getattr(settings, k)
            for k in (
                "kafka_bootstrap",
                "topic_replication",
                "topic_min_insync_replicas",
                "milvus_uri",
                "milvus_collection",
                "topic_recall_requests",
                "topic_recall_replies",
                "topic_control",
            )
        },
        recall_group_id=f"{unique_name}-recall",
        recall_poll_timeout_s=0.1,
        recall_session_timeout_ms=6000,
        metrics_port=0,
    )
    worker: RecallWorker | None = None
    worker_thread: threading.Thread | None = None
    try:
        feeder.start()
        # Kill a broker once the embedder has committed work, mid-stream.
        deadline = time.monotonic() + 120
        while committed_total(settings) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed_total(settings) > 0, "the embedder committed nothing"
        worker = RecallWorker(recall_settings, open_index(recall_settings, wait_s=60))
        worker_thread = threading.Thread(target=worker.run, daemon=True)
        worker_thread.start()
        with RecallClient(recall_settings) as client:
            victim = cluster.nodes[1]
            assert victim.kill()
            answers = [client.similar_to_vector([1.0] * _dim(model_dir), k=3, timeout=60)]
            time.sleep(5.0)
            answers.append(client.similar_to_vector([1.0] * _dim(model_dir), k=3, timeout=60))
            assert victim.start()
            answers.append(client.similar_to_vector([1.0] * _dim(model_dir), k=3, timeout=60))
        assert [a.status for a in answers] == [RecallStatus.OK] * 3
        feeder.join(120)
        assert not feeder.is_alive() and not feeder_error, feeder_error
        assert scenario.wait_drained(settings, settings.topic_partitions, timeout_s=180)
        assert embedder.poll() is None, "the embedder died"
    finally:
        if worker is not None:
            worker.stop()
            if worker_thread is not None:
                worker_thread.join(30)
            worker.close()
        embedder.terminate()
        embedder.wait(60)
    check_outcome(settings, sc)


def _dim(model_dir: Path) -> int:
    import json

    manifest = json.loads((model_dir / "manifest.json").read_text())
    return int(manifest["embedding_dim"])
