"""The sink stage without Kafka or Milvus: rebalances, crashes between durability steps, encoder
failures, and what is announced (stub model, loopback images, in-memory sink, state and sender).

Two pipelines play two replicas of one consumer group. They share the "Milvus" (a
:class:`MemorySink`) and the embedded-events topic; each has its own version state, and a new
owner "restores" the table from what the old owner had made durable, as faust's changelog
recovery does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from encoders.errors import EncoderError
from encoders.runtime import Encoder
from streams import metrics
from streams.app import Embedder
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.kafka import FaustConsumer
from streams.ledger import OffsetLedger
from streams.ownership import Ownership
from streams.pipeline import Pipeline
from streams.records import Ready, SourceRecord
from streams.settings import EmbedderSettings
from streams.sink import MilvusSink, Mutation
from streams.state import MemoryStates
from tests.streams.harness import ImageServer, encode_json, listing_event, png
from tests.streams.test_kafka import FakeApp, FakeClient, FakeFaustConsumer
from tests.streams.test_pipeline import MemorySender, MemorySink, _settings
from vitrine.settings import load
from vitrine.vectorstore import CollectionLayout

TOPIC = "events"
P0 = (TOPIC, 0)


class GatedSink(MemorySink):
    """A sink whose writes wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.acked_at: list[datetime] = []

    async def write(
        self, mutations: Sequence[Mutation], give_up: Callable[[], bool] | None = None
    ) -> dict[str, int]:
        self.entered.set()
        await self.gate.wait()
        tokens = await super().write(mutations)
        self.acked_at.append(datetime.now(UTC))
        return tokens


class HangingSender(MemorySender):
    """Embedded events are never acknowledged (the process dies while sending them)."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        if topic.endswith("embedded"):
            return asyncio.get_running_loop().create_future()
        return await super().send(topic, key, value, headers)


class Replica:
    """One pipeline with its own ownership and version state."""

    def __init__(self, pipeline: Pipeline, ownership: Ownership, states: MemoryStates) -> None:
        self.pipeline = pipeline
        self.ownership = ownership
        self.states = states

    def record(self, offset: int, payload: dict[str, Any]) -> SourceRecord:
        epoch = self.ownership.epoch(P0)
        assert epoch is not None
        key = payload["listing_id"].encode()
        return SourceRecord(TOPIC, 0, offset, key, encode_json(payload), (), epoch)

    async def prepared(self, records: list[SourceRecord]) -> list[Ready]:
        """Delivered, decided, fetched and encoded: ready for the sink."""
        ledger = self.pipeline.ledger
        for r in records:
            if not ledger.started(r.topic, r.partition):
                ledger.start(r.topic, r.partition, r.offset)
            ledger.register(r.topic, r.partition, r.offset)
            self.pipeline.submitted += 1
        return await self.pipeline.encode(await self.pipeline.prepare(records))

    async def through(self, records: list[SourceRecord]) -> None:
        await self.pipeline.checkpoint.commit(await self.prepared(records))


@contextlib.asynccontextmanager
async def replicas(
    stub_model: Path, sink: MemorySink, sender: MemorySender, count: int = 2
) -> AsyncIterator[list[Replica]]:
    settings = _settings(stub_model)
    runner = BlockingRunner(1)
    fetcher = ImageFetcher(settings)
    encoder = Encoder.load(stub_model)
    made = []
    try:
        for _ in range(count):
            ownership, states = Ownership(), MemoryStates()
            pipeline = Pipeline(
                settings,
                encoder,
                fetcher,
                sink,
                sender,
                states,
                OffsetLedger(),
                runner,
                ownership=ownership,
            )
            made.append(Replica(pipeline, ownership, states))
        yield made
    finally:
        await fetcher.close()
        runner.close()


def take_over(old: Replica, new: Replica) -> None:
    """The new owner restores the table from what the old owner made durable."""
    new.states.clear()
    new.states.update(old.states)
    new.ownership.assign([P0])


def announced(sender: MemorySender) -> list[tuple[str, int]]:
    """(listing_id, version) of every embedded event, in order."""
    out = []
    for topic, _, value in sender.sent:
        if topic.endswith("embedded") and value is not None:
            event = json.loads(value)
            out.append((event["listing_id"], event["version"]))
    return out


def events(server: ImageServer) -> dict[int, dict[str, Any]]:
    server.images["/a.png"] = png((200, 10, 10))
    server.images["/b.png"] = png((10, 200, 10))
    server.images["/c.png"] = png((10, 10, 200))
    return {
        v: listing_event(
            "X", v, "created" if v == 1 else "updated", title=t, image_url=server.url(p)
        )
        for v, t, p in (
            (1, "red car", "/a.png"),
            (2, "blue boot", "/b.png"),
            (3, "toy car", "/c.png"),
        )
    }


def test_a_revoked_partitions_held_back_batch_never_overwrites_the_new_owner(
    stub_model: Path, image_server: ImageServer
) -> None:
    """The rebalance overwrite: the old owner's batch with v2 is held back (still in its
    pipeline) while the partition moves and the new owner writes v3; then it is released."""
    ev = events(image_server)
    sink, sender = MemorySink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender) as (a, b):
            a.ownership.assign([P0])
            await a.through([a.record(0, ev[1])])
            held = await a.prepared([a.record(1, ev[2])])  # encoded, not yet in the sink
            await a.pipeline.fence({P0})  # revocation: nothing is being written, returns
            a.pipeline.forget_partitions({P0})
            take_over(a, b)
            await b.through([b.record(1, ev[2]), b.record(2, ev[3])])  # replay + newer
            assert sink.rows["X"]["version"] == 3
            await a.pipeline.checkpoint.commit(held)  # the held-back batch is released
            assert sink.rows["X"]["version"] == 3, "the old owner overwrote the new owner's row"
            assert a.states[b"X"]["v"] == 1  # nor did it touch the version state

    asyncio.run(run())
    assert announced(sender) == [("X", 1), ("X", 3)]


def test_revocation_waits_for_the_batch_being_written(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink, sender = GatedSink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender) as (a, b):
            a.ownership.assign([P0])
            sink.gate.clear()
            writing = asyncio.create_task(a.through([a.record(0, ev[1]), a.record(1, ev[2])]))
            await sink.entered.wait()
            fence = asyncio.create_task(a.pipeline.fence({P0}))
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert not fence.done(), "the rebalance completed while a write was in flight"
            sink.gate.set()
            await fence
            assert writing.done()
            take_over(a, b)  # v2 is in the restored state
            await b.through([b.record(1, ev[2]), b.record(2, ev[3])])

    asyncio.run(run())
    assert sink.rows["X"]["version"] == 3
    versions = [v for _, v in announced(sender)]
    assert versions == [2, 3]  # v2 by A before the rebalance completed; v3 by B


def test_a_write_made_durable_but_not_announced_is_announced_on_replay(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink = MemorySink()
    hanging, sender = HangingSender(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, hanging, count=1) as (a,):
            a.ownership.assign([P0])
            batch = await a.prepared([a.record(0, ev[1]), a.record(1, ev[2])])
            task = asyncio.create_task(a.pipeline.checkpoint.commit(batch))
            while a.states.get(b"X") is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()  # SIGKILL: row and state durable, the embedded event never sent
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert a.pipeline.ledger.committable() == {}
            survivor = dict(a.states)
        async with replicas(stub_model, sink, sender, count=1) as (b,):
            b.states.update(survivor)  # restored from the changelog
            b.ownership.assign([P0])
            await b.through([b.record(0, ev[1])])  # the replay: v1 is older, skipped
            await b.through([b.record(1, ev[2])])  # v2 is the durable version: announced
            assert b.pipeline.ledger.committable() == {P0: 2}

    asyncio.run(run())
    assert announced(sender) == [("X", 2)]
    (event,) = [json.loads(v) for t, _, v in sender.sent if t.endswith("embedded") and v]
    assert event["outcome"] == "embedded" and event["write_token"] == 1  # the original write's


def test_embedded_at_is_stamped_after_the_write_was_acknowledged(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink, sender = GatedSink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender, count=1) as (a,):
            a.ownership.assign([P0])
            await a.through([a.record(0, ev[1])])

    asyncio.run(run())
    (event,) = [json.loads(v) for t, _, v in sender.sent if t.endswith("embedded") and v]
    embedded_at = datetime.fromisoformat(event["embedded_at"].replace("Z", "+00:00"))
    assert embedded_at >= sink.acked_at[0]
    assert event["write_token"] == 1


class RefusingEncoder:
    """The stub model, refusing any batch that holds the title ``poison``."""

    def __init__(self, inner: Encoder) -> None:
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, images: np.ndarray, titles: Sequence[str]) -> Any:
        self.calls += 1
        if "poison" in titles:
            raise EncoderError("the model refused this input")
        return self._inner.encode(images, titles)


def test_an_encoder_failure_dead_letters_only_the_event_it_refuses(
    stub_model: Path, image_server: ImageServer
) -> None:
    image_server.images["/a.png"] = png((200, 10, 10))
    sink, sender = MemorySink(), MemorySender()
    titles = [f"car {i}" for i in range(16)]
    titles[11] = "poison"

    async def run() -> RefusingEncoder:
        async with replicas(stub_model, sink, sender, count=1) as (a,):
            a.ownership.assign([P0])
            refusing = RefusingEncoder(a.pipeline.encoder)
            a.pipeline.encoder = refusing  # type: ignore[assignment]
            records = [
                a.record(
                    i, listing_event(f"L{i}", 1, title=t, image_url=image_server.url("/a.png"))
                )
                for i, t in enumerate(titles)
            ]
            await a.through(records)
            assert a.pipeline.ledger.committable() == {P0: 16}
            return refusing

    refusing = asyncio.run(run())
    dead = [json.loads(v)["listing_id"] for t, _, v in sender.sent if t.endswith("dlq") and v]
    assert dead == ["L11"]
    assert sorted(sink.rows) == sorted(f"L{i}" for i in range(16) if i != 11)
    assert refusing.calls <= 1 + 2 * 4  # one try, then one bisection path of log2(16) levels


def test_a_replay_after_revoke_and_reassign_is_not_judged_by_the_abandoned_batch(
    stub_model: Path, image_server: ImageServer
) -> None:
    """The partition comes back to the same replica: the batch prepared before the revocation
    is abandoned, and what it had decided must not make the replay of its events look stale."""
    ev = events(image_server)
    sink, sender = MemorySink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender, count=1) as (a,):
            a.ownership.assign([P0])
            await a.through([a.record(0, ev[1])])
            held = await a.prepared([a.record(1, ev[2])])  # decided v2, still in flight
            await a.pipeline.fence({P0})
            a.pipeline.forget_partitions({P0})
            a.ownership.assign([P0])  # back to this replica: a new epoch
            replay = await a.prepared([a.record(1, ev[2])])  # prepared before the old batch
            await a.pipeline.checkpoint.commit(held)  # abandoned
            await a.pipeline.checkpoint.commit(replay)
            assert a.pipeline.ledger.committable() == {P0: 2}

    asyncio.run(run())
    assert sink.rows["X"]["version"] == 2
    assert announced(sender) == [("X", 1), ("X", 2)]


def test_a_batch_revoked_while_it_was_prepared_leaves_no_pending_state(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink, sender = MemorySink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender, count=1) as (a,):
            a.ownership.assign([P0])
            record = a.record(0, ev[1])
            a.pipeline.ledger.start(TOPIC, 0, 0)
            a.pipeline.ledger.register(TOPIC, 0, 0)
            fetch = a.pipeline.fetcher.fetch
            gate = asyncio.Event()

            async def slow_fetch(url: str) -> Any:
                await gate.wait()
                return await fetch(url)

            a.pipeline.fetcher.fetch = slow_fetch  # type: ignore[method-assign]
            preparing = asyncio.create_task(a.pipeline.prepare([record]))
            await asyncio.sleep(0.05)
            await a.pipeline.fence({P0})  # revoked while the image is being fetched
            a.pipeline.forget_partitions({P0})
            gate.set()
            await preparing
            assert len(a.pipeline.pending) == 0

    asyncio.run(run())


class DownClient:
    """A Milvus client whose every write fails (the server is away)."""

    def __init__(self) -> None:
        self.calls = 0

    def _get_connection(self) -> DownClient:  # vectorstore.upsert_rows goes through it
        return self

    def upsert_rows(self, name: str, rows: list[dict[str, Any]], timeout: Any = None) -> Any:
        self.calls += 1
        raise ConnectionError("Milvus is away")

    def delete(self, name: str, ids: list[str]) -> Any:
        self.calls += 1
        raise ConnectionError("Milvus is away")

    def query(self, name: str, **_: Any) -> Any:  # vectorstore.write_rows asks which ids exist
        self.calls += 1
        raise ConnectionError("Milvus is away")

    def insert(self, name: str, rows: list[dict[str, Any]]) -> Any:
        self.calls += 1
        raise ConnectionError("Milvus is away")


def test_a_write_failing_while_its_partitions_are_revoked_is_abandoned_not_retried(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    client = DownClient()
    sender = MemorySender()

    async def run() -> None:
        async with replicas(stub_model, MemorySink(), sender, count=1) as (a,):
            runner = a.pipeline.runner
            sink = MilvusSink(lambda: client, CollectionLayout("c", 32, "FLAT"), runner, 0.01, 0.02)
            a.pipeline.checkpoint.sink = sink
            a.ownership.assign([P0])
            batch = await a.prepared([a.record(0, ev[1])])
            writing = asyncio.create_task(a.pipeline.checkpoint.commit(batch))
            while client.calls < 3:  # Milvus down: retrying
                await asyncio.sleep(0.01)
            await asyncio.wait_for(a.pipeline.fence({P0}), 10)  # the rebalance is not held up
            await writing
            calls = client.calls
            await asyncio.sleep(0.1)
            assert client.calls == calls  # no retry after the partitions moved
            assert a.pipeline.ledger.committable() == {}
            assert a.states.get(b"X") is None and a.pipeline.idle

    asyncio.run(run())
    assert announced(sender) == []


def _heartbeat() -> float:
    return REGISTRY.get_sample_value("vitrine_embedder_heartbeat_timestamp_seconds") or 0.0


def test_the_heartbeat_stands_still_while_work_is_stuck(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink = GatedSink()
    settings = load(EmbedderSettings, metrics_port=0, commit_interval_s=0.05)

    async def run() -> None:
        async with replicas(stub_model, sink, MemorySender(), count=1) as (a,):
            embedder = Embedder(settings)
            embedder.pipeline = a.pipeline
            embedder.kafka = FaustConsumer(FakeApp(FakeFaustConsumer(FakeClient(), set())))  # type: ignore[arg-type]
            metrics.HEARTBEAT.set(0)
            ticker = asyncio.create_task(embedder._tick())
            try:
                await asyncio.sleep(0.3)
                assert _heartbeat() > 0  # idle with nothing to do: alive
                a.ownership.assign([P0])
                sink.gate.clear()
                stuck = asyncio.create_task(a.through([a.record(0, ev[1])]))
                await sink.entered.wait()
                metrics.HEARTBEAT.set(0)
                await asyncio.sleep(0.3)
                assert _heartbeat() == 0  # work pending, no progress: the timer does not beat
                sink.gate.set()
                await stuck
                await asyncio.sleep(0.3)
                assert _heartbeat() > 0
            finally:
                ticker.cancel()

    asyncio.run(run())
