"""The embedder's one seam over faust's consumer: every use of faust internals lives here.

faust-streaming has no public API for what the embedder needs (its own acking may commit past
events in flight, see docs/embedder.md), so this adapter reaches into it in a few places. Each
assumption is pinned by ``tests/streams/test_kafka.py``, which fails on a faust release that
breaks it:

- ``Consumer._thread`` is the consumer thread; ``_thread._ensure_consumer()`` is its aiokafka
  client and ``_thread.call_thread`` runs a coroutine on that thread's loop.
- ``Consumer.seek_wait`` seeks and sets faust's per-partition read offset
  (``Consumer._read_offset``); faust's fetch loop drops records below it.
- ``Consumer.highwaters`` asks the broker (``AIOKafkaConsumer.end_offsets``): live, also while
  the partition is paused, unlike ``highwater`` (the last fetch response's value).
- faust awaits the ``on_partitions_revoked`` signal inside aiokafka's rebalance listener, so the
  group waits for what the embedder does there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faust.types import TP

log = logging.getLogger(__name__)

Key = tuple[str, int]


class FaustConsumer:
    """Typed access to the faust app's Kafka consumer (committed, seek, commit, watermarks)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    def _faust(self) -> Any:
        return self._app.consumer

    def _client(self) -> Any:
        """faust's aiokafka client (raises while faust's consumer thread is not started)."""
        return self._faust()._thread._ensure_consumer()

    async def _on_thread(self, method: Any, *args: Any) -> Any:
        return await self._faust()._thread.call_thread(method, *args)

    def assignment(self) -> set[Key]:
        """Partitions the group gave this replica now."""
        return {(tp.topic, tp.partition) for tp in self._faust().assignment()}

    async def resume_offset(self, key: Key) -> int:
        """Where the group resumes a partition: its committed offset, else the log start."""
        tp = TopicPartition(*key)
        committed = await self._on_thread(self._client().committed, tp)
        if committed is not None and committed >= 0:
            return int(committed)
        earliest = await self._faust().earliest_offsets(TP(*key))
        return int(next(iter(earliest.values()), 0))

    async def seek(self, key: Key, offset: int) -> None:
        """Fetch ``key`` again from ``offset`` (faust's read offset moves with it)."""
        tp = TP(*key)
        await self._faust().seek_wait({tp: offset})
        # seek_wait leaves no read offset for offset 0: faust then delivers from anywhere.
        self._faust()._read_offset[tp] = offset if offset > 0 else None

    async def commit(self, offsets: Mapping[Key, int]) -> dict[Key, int]:
        """Commit offsets of partitions still assigned; returns those Kafka accepted.

        Any failure (a rebalance in progress, the broker away) returns ``{}``: nothing may be
        recorded as committed, and the caller retries. faust's own commit path is not used: it
        crashes the app on most commit errors and its producer flush has a 0.1 s cut-off that
        the embedder's sink already does properly (it awaits every acknowledgement).
        """
        assigned = self.assignment()
        wanted = {key: offset for key, offset in offsets.items() if key in assigned}
        if not wanted:
            return {}
        request = {TopicPartition(*k): OffsetAndMetadata(o, "") for k, o in wanted.items()}
        try:
            await self._on_thread(self._client().commit, request)
        except Exception as exc:  # CommitFailedError, KafkaError, ConsumerNotStarted, ...
            log.warning("offset commit refused (%r); will retry", exc)
            return {}
        return wanted

    async def high_watermarks(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Log end offsets read from the broker now (not a cached fetch value)."""
        tps = [TP(*key) for key in keys]
        if not tps:
            return {}
        ends = await self._faust().highwaters(*tps)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    def pause(self, keys: Iterable[Key]) -> None:
        """Stop fetching these partitions."""
        self._faust().pause_partitions([TP(*key) for key in keys])

    def resume(self, keys: Iterable[Key]) -> None:
        """Fetch these partitions again."""
        self._faust().resume_partitions([TP(*key) for key in keys])
