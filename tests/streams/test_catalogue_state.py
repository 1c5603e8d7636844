"""The catalogue's state records (``listings.state``): written with the announcements, once a row
is durable; fields of the newest version, a tombstone on delete, again on a replay."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

from schemas import decode_catalogue_entry
from tests.streams.harness import ImageServer
from tests.streams.test_checkpoint import P0, HangingSender, events, replicas
from tests.streams.test_pipeline import MemorySender, MemorySink


def state_records(sender: MemorySender) -> list[tuple[bytes | None, bytes | None]]:
    return [(key, value) for topic, key, value in sender.sent if topic == "listings.state"]


def test_each_durable_version_is_recorded_and_a_delete_is_a_tombstone(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink, sender = MemorySink(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, sender, count=1) as (a,):
            a.ownership.assign([P0])
            await a.through([a.record(0, ev[1])])
            await a.through([a.record(1, ev[2]), a.record(2, ev[1])])  # v1 again: stale
            gone = {**ev[3], "event_type": "deleted", "event_id": "X-4-deleted", "version": 4}
            await a.through([a.record(3, gone)])

    asyncio.run(run())
    records = state_records(sender)
    assert [key for key, _ in records] == [b"X", b"X", b"X"]
    first, second = (decode_catalogue_entry(value) for _, value in records[:2])
    assert (first.version, first.title, first.cover_url) == (1, "red car", ev[1]["image_urls"][0])
    assert second.version == 2 and second.title == "blue boot"
    assert second.cover_sha256 == hashlib.sha256(image_server.images["/b.png"]).hexdigest()
    assert (second.category, second.price.amount, second.seller_id) == ("vehicles/car", 10.0, "s1")
    assert records[2][1] is None  # the tombstone: compaction forgets the listing


def test_a_state_record_lost_in_a_crash_is_written_on_replay(
    stub_model: Path, image_server: ImageServer
) -> None:
    ev = events(image_server)
    sink = MemorySink()
    hanging, sender = HangingSender(), MemorySender()

    async def run() -> None:
        async with replicas(stub_model, sink, hanging, count=1) as (a,):
            a.ownership.assign([P0])
            batch = await a.prepared([a.record(0, ev[2])])
            task = asyncio.create_task(a.pipeline.checkpoint.commit(batch))
            while a.states.get(b"X") is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()  # SIGKILL before the announcements were acknowledged
            with contextlib.suppress(asyncio.CancelledError):
                await task
            survivor = dict(a.states)
        async with replicas(stub_model, sink, sender, count=1) as (b,):
            b.states.update(survivor)
            b.ownership.assign([P0])
            await b.through([b.record(0, ev[2])])  # announced again, state record with it

    asyncio.run(run())
    ((key, value),) = state_records(sender)
    entry = decode_catalogue_entry(value)
    assert key == b"X" and entry.version == 2
    assert entry.cover_sha256 == hashlib.sha256(image_server.images["/b.png"]).hexdigest()
