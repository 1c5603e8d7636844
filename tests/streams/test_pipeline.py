"""The pipeline's stages without Kafka or Milvus: which version a row ends at, and when offsets
may be committed (stub model, loopback image server, in-memory sink and state)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from encoders.runtime import Encoder
from streams.checkpoint import Sender
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.ledger import OffsetLedger
from streams.pipeline import Pipeline
from streams.records import SourceRecord
from streams.settings import EmbedderSettings
from streams.sink import Mutation, VectorSink, newest_per_listing
from streams.state import MemoryStates, StateStore
from tests.streams.harness import ImageServer, encode_json, listing_event, png
from vitrine.settings import load

TOPIC = "events"


class MemorySink:
    """:class:`VectorSink` over a dict of rows."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.clock = 0  # a write token per call, like Milvus timestamps
        self.read_tokens: list[int | None] = []  # the write token each fetch asked for

    async def write(
        self, mutations: Sequence[Mutation], give_up: Callable[[], bool] | None = None
    ) -> dict[str, int]:
        self.clock += 1
        for m in newest_per_listing(mutations):
            if m.row is None:
                self.rows.pop(m.listing_id, None)
            else:
                self.rows[m.listing_id] = m.row
        return {m.listing_id: self.clock for m in mutations}

    async def fetch_rows(
        self, listing_ids: Sequence[str], write_token: int | None = None
    ) -> dict[str, dict[str, Any]]:
        self.read_tokens.append(write_token)
        return {i: self.rows[i] for i in listing_ids if i in self.rows}


class MemorySender:
    """:class:`Sender` that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class GatedStates(MemoryStates):
    """State whose writes become durable only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def durable(self) -> None:
        await self.gate.wait()


def _settings(stub_model: Path) -> EmbedderSettings:
    return load(
        EmbedderSettings,
        model_dir=stub_model,
        allow_loopback_images=True,
        fetch_attempts=1,
        metrics_port=0,
    )


@contextlib.asynccontextmanager
async def _pipeline(stub_model: Path, states: StateStore) -> AsyncIterator[Pipeline]:
    """A pipeline on in-memory sink and sender; create inside the event loop."""
    settings = _settings(stub_model)
    runner = BlockingRunner(1)
    fetcher = ImageFetcher(settings)
    sink: VectorSink = MemorySink()
    sender: Sender = MemorySender()
    try:
        encoder = Encoder.load(stub_model)
        yield Pipeline(settings, encoder, fetcher, sink, sender, states, OffsetLedger(), runner)
    finally:
        await fetcher.close()
        runner.close()


async def _through(pipeline: Pipeline, records: list[SourceRecord]) -> None:
    """One batch through the three stages."""
    for record in records:
        if not pipeline.ledger.started(record.topic, record.partition):
            pipeline.ledger.start(record.topic, record.partition, 0)
        pipeline.ledger.register(record.topic, record.partition, record.offset)
    await pipeline.checkpoint.commit(await pipeline.encode(await pipeline.prepare(records)))


def _records(server: ImageServer) -> dict[str, SourceRecord]:
    server.images["/p1.png"] = png((10, 200, 10))
    server.images["/p2.png"] = png((10, 10, 200))
    events = {
        "v1": listing_event("L1", 1, image_url=server.url("/p1.png")),
        "v2": listing_event("L1", 2, "updated", title="blue car", image_url=server.url("/p2.png")),
        "v3": listing_event("L1", 3, "updated", image_url=server.url("/gone.png")),
    }
    return {
        name: SourceRecord(TOPIC, 0, offset, b"L1", encode_json(event))
        for offset, (name, event) in enumerate(events.items())
    }


ORDERS = [
    [["v1", "v2", "v3"]],
    [["v1"], ["v2"], ["v3"]],
    [["v3"], ["v1", "v2"]],
    [["v1", "v3", "v2"]],
    [["v3"], ["v2"], ["v1"]],
    [["v1", "v2"], ["v3"]],
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "|".join(",".join(b) for b in o))
def test_row_keeps_newest_valid_version_whatever_the_batching(
    stub_model: Path, image_server: ImageServer, order: list[list[str]]
) -> None:
    records = _records(image_server)

    async def run() -> Pipeline:
        async with _pipeline(stub_model, MemoryStates()) as pipeline:
            offset = 0
            for names in order:  # offsets in arrival order, as the consumer delivers them
                batch = []
                for name in names:
                    batch.append(dataclasses.replace(records[name], offset=offset))
                    offset += 1
                await _through(pipeline, batch)
            return pipeline

    pipeline = asyncio.run(run())
    sink, sender = pipeline.sink, pipeline.checkpoint.sender
    assert isinstance(sink, MemorySink) and isinstance(sender, MemorySender)
    assert sink.rows["L1"]["version"] == 2
    assert [v for topic, _, v in sender.sent if topic.endswith("dlq")] == [records["v3"].value]
    assert pipeline.ledger.committable() == {(TOPIC, 0): 3}
    assert len(pipeline.pending) == 0


def test_offsets_wait_for_the_version_state_to_be_durable(
    stub_model: Path, image_server: ImageServer
) -> None:
    records = _records(image_server)
    states = GatedStates()

    async def run() -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        async with _pipeline(stub_model, states) as pipeline:
            task = asyncio.create_task(_through(pipeline, [records["v1"], records["v2"]]))
            while not states:  # rows and state written; the state is not durable yet
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            blocked = pipeline.ledger.committable()
            states.gate.set()
            await task
            return blocked, pipeline.ledger.committable()

    blocked, after = asyncio.run(run())
    assert blocked == {}
    assert after == {(TOPIC, 0): 2}


def test_a_price_edit_reuses_the_row_and_a_vanished_row_is_embedded_again(
    stub_model: Path, image_server: ImageServer
) -> None:
    image_server.images["/p1.png"] = png((10, 200, 10))
    url = image_server.url("/p1.png")
    versions = [listing_event("L1", 1, image_url=url)] + [
        listing_event("L1", v, "updated", image_url=url, price=10.0 + v) for v in (2, 3)
    ]
    records = [
        SourceRecord(TOPIC, 0, v - 1, b"L1", encode_json(e)) for v, e in enumerate(versions, 1)
    ]

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with _pipeline(stub_model, MemoryStates()) as pipeline:
            sink = pipeline.sink
            assert isinstance(sink, MemorySink)
            await _through(pipeline, records[:1])
            first = dict(sink.rows["L1"])
            await _through(pipeline, records[1:2])  # same title and cover: the row is reused
            reused = dict(sink.rows["L1"])
            sink.rows.clear()  # the row vanished (a wiped collection)
            await _through(pipeline, records[2:])
            again = dict(sink.rows["L1"])
            sender = pipeline.checkpoint.sender
            assert isinstance(sender, MemorySender)
            announced = [json.loads(v) for t, _, v in sender.sent if t.endswith("embedded") and v]
            assert pipeline.ledger.committable() == {(TOPIC, 0): 3}
            # Each read back asked to see the row's own write (the token of the write before).
            assert sink.read_tokens == [1, 2]
            return [first, reused, again], announced

    rows, announced = asyncio.run(run())
    assert [a["outcome"] for a in announced] == ["embedded", "unchanged", "embedded"]
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert [r["price"] for r in rows] == [10.0, 12.0, 13.0]
    assert rows[1]["embedding"] == rows[0]["embedding"]  # read back, not encoded again
    assert rows[2]["embedding"] == pytest.approx(rows[0]["embedding"], abs=1e-5)
