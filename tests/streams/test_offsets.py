"""Offsets are committed only past events whose side effects are done (faust issue #606).

The sink is held shut by a gate for the first batches: while it is shut the committed offsets
must never pass the first event that is still inside the pipeline, however many events the
consumer has fetched and the earlier stages have finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from streams.app import Embedder
from streams.settings import EmbedderSettings
from streams.sink import Mutation
from tests.streams import scenario
from tests.streams.harness import ImageServer, encode_json, listing_event, png, produce

pytestmark = pytest.mark.integration


def test_commit_never_passes_an_unfinished_event(
    embedder_settings: EmbedderSettings, image_server: ImageServer
) -> None:
    settings = embedder_settings.model_copy(update={"batch_size": 8, "batch_wait_ms": 5})
    image_server.images["/o.png"] = png((9, 9, 9))
    total = 200
    records = [
        (
            f"K{i:04d}".encode(),
            encode_json(listing_event(f"K{i:04d}", 1, image_url=image_server.url("/o.png"))),
        )
        for i in range(total)
    ]
    produce(settings, settings.topic_events, records)
    embedder = Embedder(settings)
    gate = asyncio.Event()
    written: list[int] = []
    observations: list[tuple[dict[int, int], set[tuple[int, int]]]] = []
    finished: set[tuple[int, int]] = set()
    real_finish = embedder.ledger.finish

    def finish(topic: str, partition: int, offset: int) -> None:
        finished.add((partition, offset))
        real_finish(topic, partition, offset)

    embedder.ledger.finish = finish  # type: ignore[method-assign]

    async def gated_run() -> int:
        task = asyncio.create_task(embedder.run(max_events=total))
        while embedder.pipeline is None:
            await asyncio.sleep(0.01)
        sink = embedder.pipeline.sink
        real_write = sink.write

        async def write(mutations: Sequence[Mutation], give_up: Any = None) -> dict[str, int]:
            if len(written) >= 3:
                await gate.wait()
            tokens = await real_write(mutations, give_up)
            written.append(len(mutations))
            return tokens

        sink.write = write  # type: ignore[method-assign]
        # Wait until the pipeline is stuck at the gate with events queued behind it.
        deadline = time.monotonic() + 60
        while embedder.ledger.unfinished() < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for _ in range(6):  # several commit intervals while blocked
            await asyncio.sleep(settings.commit_interval_s)
            got = await asyncio.to_thread(scenario.committed, settings, settings.topic_partitions)
            observations.append((got, set(finished)))
        gate.set()
        return await task

    assert asyncio.run(gated_run()) == 0
    # While blocked: every offset below a committed one had finished; much had not.
    assert written and len(observations) == 6
    for got, done in observations:
        assert len(done) < total
        for partition, offset in got.items():
            below = {(partition, o) for o in range(max(0, offset))}
            assert below <= done, f"partition {partition} committed {offset} past unfinished"
    assert any(off > 0 for got, _ in observations for off in got.values()), "nothing committed"
    # Afterwards everything is committed.
    ends = scenario.end_offsets(settings, settings.topic_partitions)
    assert scenario.committed(settings, settings.topic_partitions) == ends
