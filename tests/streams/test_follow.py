"""The pipeline's side of a hand-over, without Kafka or Milvus: ``hold`` returns only once the
batches in flight are durable; batches formed after ``use_model`` go to the new sink with the
new model; nothing is lost or written twice."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from encoders.runtime import Encoder
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.follow import replica_client_id
from streams.ledger import OffsetLedger
from streams.pipeline import Pipeline
from streams.records import SourceRecord
from streams.settings import EmbedderSettings
from tests.streams.harness import ImageServer, encode_json, listing_event, png
from tests.streams.test_pipeline import TOPIC, GatedStates, MemorySender, MemorySink
from tests.stub_model import build_stub_model
from vitrine.settings import load


def test_hold_drains_then_the_new_model_writes_the_new_sink(
    stub_model: Path, image_server: ImageServer, tmp_path: Path
) -> None:
    new_model = build_stub_model(tmp_path / "new", seed=1)
    image_server.images["/h.png"] = png((200, 30, 30))
    url = image_server.url("/h.png")
    settings = load(
        EmbedderSettings,
        model_dir=stub_model,
        allow_loopback_images=True,
        fetch_attempts=1,
        metrics_port=0,
        batch_size=4,
        batch_wait_ms=5,
    )

    def record(offset: int, listing: str) -> SourceRecord:
        event = listing_event(listing, 1, image_url=url)
        return SourceRecord(TOPIC, 0, offset, listing.encode(), encode_json(event))

    async def run() -> tuple[bool, MemorySink, MemorySink, Pipeline, str, str]:
        runner = BlockingRunner(1)
        fetcher = ImageFetcher(settings)
        states = GatedStates()
        old_sink, new_sink = MemorySink(), MemorySink()
        old, new = Encoder.load(stub_model), Encoder.load(new_model)
        ledger = OffsetLedger()
        ledger.start(TOPIC, 0, 0)
        pipeline = Pipeline(
            settings, old, fetcher, old_sink, MemorySender(), states, ledger, runner
        )
        work = asyncio.create_task(pipeline.run())
        try:
            for i in range(6):
                await pipeline.submit(record(i, f"A{i}"))
            while not states:  # the first batch reached the version state: in flight
                await asyncio.sleep(0.01)
            holding = asyncio.create_task(pipeline.hold())
            await asyncio.sleep(0.3)
            drained_early = holding.done()  # the state is not durable yet: must still wait
            states.gate.set()
            await holding
            pipeline.use_model(new, new_sink)
            pipeline.resume()
            for i in range(6, 10):
                await pipeline.submit(record(i, f"B{i}"))
            while pipeline.finished < 10:
                await asyncio.sleep(0.01)
            return (
                drained_early,
                old_sink,
                new_sink,
                pipeline,
                old.manifest.model_version,
                new.manifest.model_version,
            )
        finally:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await fetcher.close()
            runner.close()

    drained_early, old_sink, new_sink, pipeline, old_model, new_model_version = asyncio.run(run())
    assert not drained_early
    assert old_model != new_model_version
    # The batch in flight at the hold went to the old collection with the old model; records
    # not yet in a batch (A4, A5 may be) and everything after, to the new one with the new
    # model; none twice, none lost.
    assert {"A0", "A1", "A2", "A3"} <= set(old_sink.rows)
    assert {f"B{i}" for i in range(6, 10)} <= set(new_sink.rows)
    assert not set(old_sink.rows) & set(new_sink.rows)
    assert set(old_sink.rows) | set(new_sink.rows) == {
        *(f"A{i}" for i in range(6)),
        *(f"B{i}" for i in range(6, 10)),
    }
    assert {r["model_version"] for r in old_sink.rows.values()} == {old_model}
    assert {r["model_version"] for r in new_sink.rows.values()} == {new_model_version}
    assert pipeline.ledger.committable() == {(TOPIC, 0): 10}


def test_client_id_carries_the_instance() -> None:
    settings = load(EmbedderSettings, app_id="emb", instance_id="r-1", metrics_port=0)
    assert replica_client_id(settings) == "emb.r-1"
    default = replica_client_id(load(EmbedderSettings, app_id="emb", metrics_port=0))
    assert default.startswith("emb.") and default.endswith(f".{os.getpid()}")


def test_start_waits_for_milvus_to_check_the_stream_records_collection(monkeypatch) -> None:
    """An embedder started while a stream record exists and Milvus is away waits for Milvus
    (as its sink does) instead of stopping; a refusal (the collection is wrong) still stops."""
    from streams import follow
    from tests.streams.test_handover import stream

    record = stream(collection="listings__m2", model="m2", group=None)
    settings = load(EmbedderSettings, app_id="emb", instance_id="r-1", metrics_port=0)
    calls: list[str] = []

    def flaky_check(_settings, named, _rollout) -> None:
        calls.append(named.collection)
        if len(calls) < 3:
            raise ConnectionError("milvus: connection refused")

    async def read_record(self, wait: bool = False) -> None:
        self.stream = record

    monkeypatch.setattr(follow, "check_collection", flaky_check)
    monkeypatch.setattr(follow.StreamFollower, "_poll", read_record)
    monkeypatch.setattr(follow.asyncio, "sleep", _no_wait)
    follower = follow.StreamFollower(settings, "emb.r-1")
    started = asyncio.run(follower.start())
    assert calls == ["listings__m2"] * 3
    assert started.milvus_collection == "listings__m2"
    assert started.model_dir == Path("/models/m2")

    def refuse(_settings, named, _rollout) -> None:
        raise follow.SwitchRefused("gone", reason="collection_missing")

    monkeypatch.setattr(follow, "check_collection", refuse)
    follower = follow.StreamFollower(settings, "emb.r-1")
    with pytest.raises(follow.SwitchRefused) as refused:
        asyncio.run(follower.start())
    assert refused.value.reason == "collection_missing"


async def _no_wait(_seconds: float) -> None:
    return None


def test_replicas_insert_new_listings_only_while_no_rollout_job_writes_their_collection() -> None:
    """milvus-lite's query-then-insert for new listings is only safe for a sole writer: while
    the rollout job still feeds the candidate the stream record names, the replicas upsert."""
    from schemas import RolloutPhase
    from streams import follow
    from streams.executor import BlockingRunner
    from streams.sink import MilvusSink
    from tests.streams.test_handover import rollout, stream

    settings = load(EmbedderSettings, app_id="emb", instance_id="r-1", metrics_port=0)
    follower = follow.StreamFollower(settings, "emb.r-1")
    assert follower.sole_writer  # no stream record: the live collection, replicas only
    follower.stream = stream(collection="listings__m2", group="g")
    follower.rollout = rollout(RolloutPhase.CUT_OVER)
    assert not follower.sole_writer  # the job still writes listings__m2
    follower.rollout = rollout(RolloutPhase.FINISHED)
    assert follower.sole_writer  # finished: the job is gone
    follower.stream = stream(collection="listings__m2", group=None)
    follower.rollout = rollout(RolloutPhase.CUT_OVER)
    assert follower.sole_writer  # nothing to wait for, nobody else named

    runner = BlockingRunner(1)
    try:
        lite = load(EmbedderSettings, milvus_kind="lite", metrics_port=0)
        alone = MilvusSink.for_settings(lite, 8, runner)
        shared = MilvusSink.for_settings(lite, 8, runner, sole_writer=False)
        assert alone.insert_absent and not shared.insert_absent
    finally:
        runner.close()
