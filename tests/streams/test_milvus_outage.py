"""Milvus going away pauses the embedder: nothing is dropped, dead-lettered or committed.

The test runs its own milvus-lite server (own home, own port) so it can stop it; the shared
server of the other tests is never touched.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from streams.app import Embedder
from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, encode_json, listing_event, png, produce
from vitrine.infra import milvus as milvus_infra
from vitrine.infra.milvus import LocalMilvus
from vitrine.settings import InfraSettings, load

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A milvus-lite server of this test only, on its own home and port."""

    def __init__(self, home: Path) -> None:
        self.local = LocalMilvus(load(InfraSettings, home=home, milvus_port=_free_port()))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoint(self) -> str:
        return self.local.settings.milvus_endpoint

    def start(self) -> None:
        # LocalMilvus keeps the pid only; keep the Popen too, to wait for it after stopping.
        procs, real = self.procs, subprocess.Popen

        class KeptPopen(real):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                procs.append(self)

        with mock.patch.object(milvus_infra.subprocess, "Popen", KeptPopen):
            self.local.start()

    def stop(self) -> None:
        self.local.stop()
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture
def own_milvus(tmp_path: Path) -> Iterator[_Server]:
    """A milvus-lite server of this test only."""
    server = _Server(tmp_path / "home")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _retries() -> float:
    return sum(
        REGISTRY.get_sample_value("vitrine_embedder_milvus_retries_total", {"op": op}) or 0.0
        for op in ("upsert", "delete", "query")
    )


def _dlq_size(settings: EmbedderSettings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "wm"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(settings.topic_dlq, p), timeout=10)[1]
            for p in range(settings.topic_partitions)
        )
    finally:
        consumer.close()


def test_milvus_outage_pauses_then_everything_lands_once(
    embedder_settings: EmbedderSettings, image_server: ImageServer, own_milvus: _Server
) -> None:
    settings = embedder_settings.model_copy(
        update={
            "milvus_uri": own_milvus.endpoint,
            "milvus_backoff_s": 0.2,
            "milvus_backoff_max_s": 1.0,
            "batch_size": 16,
        }
    )
    image_server.images["/a.png"] = png((200, 40, 40))
    image_server.images["/b.png"] = png((40, 40, 200))
    a, b = image_server.url("/a.png"), image_server.url("/b.png")
    first = [listing_event(f"M{i:03d}", 1, image_url=a) for i in range(60)]
    second = [
        listing_event(f"M{i:03d}", 2, "updated", title="blue boot", image_url=b)
        for i in range(0, 60, 2)
    ]
    second += [listing_event(f"M{i:03d}", 3, "deleted") for i in range(1, 60, 4)]
    second += [listing_event(f"N{i:03d}", 1, image_url=b) for i in range(40)]
    final = {e["listing_id"]: e["version"] for e in first + second}
    for e in second:
        if e["event_type"] == "deleted":
            del final[e["listing_id"]]
    total = len(first) + len(second)

    def records(events: list[dict[str, object]]) -> list[tuple[bytes, bytes]]:
        return [(str(e["listing_id"]).encode(), encode_json(e)) for e in events]

    async def run() -> tuple[int, int, dict[int, int], dict[int, int]]:
        embedder = Embedder(settings)
        task = asyncio.create_task(embedder.run(max_events=total))
        await asyncio.to_thread(produce, settings, settings.topic_events, records(first))
        deadline = time.monotonic() + 60
        while embedder.ledger.passed() < len(first) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert embedder.pipeline is not None and embedder.ledger.passed() == len(first)
        await asyncio.to_thread(own_milvus.stop)
        finished_at_stop = embedder.pipeline.finished
        retries = _retries()
        await asyncio.to_thread(produce, settings, settings.topic_events, records(second))
        deadline = time.monotonic() + 90
        while _retries() < retries + 4:  # the sink is retrying against the stopped server
            assert time.monotonic() < deadline, "the sink never retried against the stopped server"
            await asyncio.sleep(0.2)
        held = await asyncio.to_thread(scenario.committed, settings, settings.topic_partitions)
        await asyncio.sleep(2 * settings.commit_interval_s + 1.0)
        still = await asyncio.to_thread(scenario.committed, settings, settings.topic_partitions)
        paused_finished = embedder.pipeline.finished - finished_at_stop
        unfinished = embedder.ledger.unfinished()
        await asyncio.to_thread(own_milvus.start)
        assert await task == 0
        return paused_finished, unfinished, held, still

    paused_finished, unfinished, held, still = asyncio.run(run())
    # While Milvus was down: nothing finished, nothing committed, nothing dead-lettered.
    assert paused_finished == 0
    assert unfinished > 0
    assert held == still
    assert sum(max(0, o) for o in held.values()) == len(first)
    # Afterwards every event landed once: exact rows, no dead letters, all committed.
    rows = scenario.milvus_rows(settings)
    assert len(rows) == len({r["listing_id"] for r in rows})
    assert {r["listing_id"]: r["version"] for r in rows} == final
    assert _dlq_size(settings) == 0
    ends = scenario.end_offsets(settings, settings.topic_partitions)
    assert scenario.committed(settings, settings.topic_partitions) == ends
