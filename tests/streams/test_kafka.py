"""Every assumption :mod:`streams.kafka` makes about faust, pinned; and the commit-failure path.

Each ``test_faust_*`` fails on a faust release that changes what the embedder relies on. Some
read faust's source, because the behaviour lives in loops that only run against a broker; the
integration tests (``test_offsets.py``, ``test_crash.py``, ``test_soak.py``) exercise it for real.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from faust.app.base import App
from faust.exceptions import ConsumerNotStarted
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.app import Embedder, build_app
from streams.kafka import FaustConsumer
from streams.settings import EmbedderSettings
from vitrine.settings import load


def _settings() -> EmbedderSettings:
    return load(EmbedderSettings, metrics_port=0)


@pytest.fixture
def app() -> Iterator[Any]:
    loop = asyncio.new_event_loop()  # faust binds the current loop; close it afterwards
    asyncio.set_event_loop(loop)
    app: Any = build_app(_settings())
    try:
        yield app
    finally:
        if "_consumer" in app.__dict__:  # created lazily, with its thread's own loop
            app._consumer._thread.thread_loop.close()
        asyncio.set_event_loop(None)
        loop.close()


def _source(fn: Any) -> str:
    return inspect.getsource(fn)


def test_faust_consumer_thread_owns_the_aiokafka_client(app: Any) -> None:
    consumer = app.consumer
    assert isinstance(consumer, faust_aiokafka.Consumer)
    assert isinstance(consumer._thread, faust_aiokafka.AIOKafkaConsumerThread)
    assert inspect.iscoroutinefunction(consumer._thread.call_thread)
    with pytest.raises(ConsumerNotStarted):  # the client exists only once the thread runs
        consumer._thread._ensure_consumer()


def test_faust_drops_records_below_the_read_offset(app: Any) -> None:
    assert isinstance(app.consumer._read_offset, dict)
    assert app.consumer._read_offset[TP("t", 0)] is None  # defaultdict: unknown = None
    drain = _source(faust_consumer.Consumer._drain_messages)
    assert "r_offset is None or offset >= r_offset" in drain
    assert "set_read_offset(tp, offset)" in drain


def test_faust_seek_wait_moves_the_read_offset() -> None:
    seek = _source(faust_aiokafka.AIOKafkaConsumerThread._seek_wait)
    assert "consumer.seek(tp, offset)" in seek
    assert "self.consumer._read_offset[tp] = offset" in seek


def test_faust_highwaters_asks_the_broker() -> None:
    # highwater() is the last fetch response's value and freezes while a partition is paused.
    assert "end_offsets" in _source(faust_aiokafka.AIOKafkaConsumerThread._highwaters)
    assert inspect.iscoroutinefunction(faust_consumer.ThreadDelegateConsumer.highwaters)


def test_faust_awaits_the_revocation_signal_inside_the_rebalance() -> None:
    listener = _source(faust_aiokafka.ConsumerRebalanceListener.on_partitions_revoked)
    assert "return thread.on_partitions_revoked(" in listener  # handed to aiokafka to await
    relay = _source(faust_consumer.ThreadDelegateConsumer.threadsafe_partitions_revoked)
    assert "await promise" in relay  # the consumer thread waits for the main loop
    revoked = _source(App._on_partitions_revoked)
    assert "await T(self.on_partitions_revoked.send)(revoked)" in revoked
    # Once stopping, faust skips the signal: the embedder fences before it stops faust.
    assert "if self.should_stop:" in revoked.split("T(self.tables.on_partitions_revoked)")[0]


def test_faust_never_acks_a_topic_declared_without_acks(app: Any) -> None:
    app.topics.add(app.topic("quiet", value_serializer="raw", acks=False))
    app.topics.add(app.topic("loud", value_serializer="raw"))
    asyncio.get_event_loop().run_until_complete(app.topics._update_indices())
    assert app.topics.acks_enabled_for("quiet") is False
    assert app.topics.acks_enabled_for("loud") is True


def test_faust_pause_and_resume_exist(app: Any) -> None:
    for name in ("pause_partitions", "resume_partitions", "seek_wait", "earliest_offsets"):
        assert callable(getattr(app.consumer, name))


class FakeClient:
    """aiokafka's consumer as far as commits go."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.committed: list[dict[Any, Any]] = []

    async def commit(self, offsets: dict[Any, Any]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append(offsets)


class FakeThread:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def _ensure_consumer(self) -> FakeClient:
        return self.client

    async def call_thread(self, method: Any, *args: Any) -> Any:
        return await method(*args)


class FakeFaustConsumer:
    def __init__(self, client: FakeClient, assigned: set[TP]) -> None:
        self._thread = FakeThread(client)
        self.assigned = assigned

    def assignment(self) -> set[TP]:
        return self.assigned


class FakeApp:
    def __init__(self, consumer: FakeFaustConsumer) -> None:
        self.consumer = consumer


def test_a_refused_commit_is_never_recorded_and_is_retried() -> None:
    client = FakeClient()
    client.errors = [
        CommitFailedError("already rebalanced"),
        KafkaConnectionError("broker away"),
    ]
    embedder = Embedder(_settings())
    embedder.kafka = FaustConsumer(FakeApp(FakeFaustConsumer(client, {TP("ev", 0)})))  # type: ignore[arg-type]
    ledger = embedder.ledger
    ledger.start("ev", 0, 0)
    for offset in range(3):
        ledger.register("ev", 0, offset)
        ledger.finish("ev", 0, offset)
    embedder._max_events = 3

    async def run() -> list[dict[tuple[str, int], int]]:
        return [await embedder.commit() for _ in range(3)]

    first, second, third = asyncio.run(run())
    assert first == {} and second == {}  # refused: nothing recorded
    assert third == {("ev", 0): 3}
    assert len(client.committed) == 1
    ((tp, meta),) = client.committed[0].items()
    assert (tp.topic, tp.partition, meta.offset) == ("ev", 0, 3)
    assert ledger.committable() == {}
    assert embedder._burst_done()


def test_burst_mode_does_not_end_while_a_commit_is_refused() -> None:
    client = FakeClient()
    client.errors = [CommitFailedError("rebalancing")]
    embedder = Embedder(_settings())
    embedder.kafka = FaustConsumer(FakeApp(FakeFaustConsumer(client, {TP("ev", 0)})))  # type: ignore[arg-type]
    embedder.ledger.start("ev", 0, 0)
    embedder.ledger.register("ev", 0, 0)
    embedder.ledger.finish("ev", 0, 0)
    embedder._max_events = 1
    assert asyncio.run(embedder.commit()) == {}
    assert not embedder._burst_done()


def test_offsets_of_partitions_no_longer_assigned_are_not_committed() -> None:
    client = FakeClient()
    seam = FaustConsumer(FakeApp(FakeFaustConsumer(client, {TP("ev", 1)})))  # type: ignore[arg-type]
    accepted = asyncio.run(seam.commit({("ev", 0): 5, ("ev", 1): 7}))
    assert accepted == {("ev", 1): 7}
    assert [(tp.partition, m.offset) for tp, m in client.committed[0].items()] == [(1, 7)]


def test_a_seek_back_that_hangs_is_given_up_and_tried_again(monkeypatch) -> None:
    """A seek on faust's consumer thread that never finishes must not hold up its caller (the
    intake agent or the commit tick, and with them every partition): it is abandoned after
    SEEK_TIMEOUT_S and the tick seeks again while the hole stays open."""
    from streams import app as app_module
    from streams import metrics

    calls: list[tuple[tuple[str, int], int]] = []

    class HangingSeam:
        async def seek(self, key: tuple[str, int], offset: int) -> None:
            calls.append((key, offset))
            await asyncio.Event().wait()  # never set

    monkeypatch.setattr(app_module, "SEEK_TIMEOUT_S", 0.05)
    monkeypatch.setattr(app_module, "RESEEK_AFTER_S", 0.0)
    embedder = Embedder(_settings())
    embedder.kafka = HangingSeam()  # type: ignore[assignment]
    ledger = embedder.ledger
    ledger.start("ev", 0, 0)
    ledger.register("ev", 0, 2)  # offsets 0 and 1 were fetched but never delivered
    assert ledger.holes() == {("ev", 0): 0}
    before = metrics.SEEKS_BACK_TIMED_OUT._value.get()

    async def run() -> None:
        await asyncio.wait_for(embedder._seek_back(("ev", 0), 0), 5)
        await asyncio.wait_for(embedder._reseek_holes(), 5)

    asyncio.run(run())
    assert calls == [(("ev", 0), 0), (("ev", 0), 0)]
    assert metrics.SEEKS_BACK_TIMED_OUT._value.get() == before + 2
