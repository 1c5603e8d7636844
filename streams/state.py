"""Per-listing version state: the durable table, and the states decided but not yet written.

The durable state lives in a faust table whose changelog topic is what survives a crash. faust
sends changelog records through its producer buffer, and ``Producer.flush`` (which faust's
commit path calls) only waits 0.1 s per message and does not see a record that is being handed
to the Kafka client at that moment, so a commit could overtake the changelog records of the very
events it covers. After a SIGKILL the restored table then missed versions that were written to
Milvus and committed, and a late duplicate of an older version overwrote the newer row.
:class:`VersionTable` therefore keeps the delivery future of every changelog record it sends, and
the sink awaits :meth:`VersionTable.durable` before any offset of the batch can be committed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import faust

from streams.guard import ListingState

log = logging.getLogger(__name__)


class StateStore(Protocol):
    """The durable per-listing state (a :class:`VersionTable`, or :class:`MemoryStates`)."""

    def get(self, key: bytes) -> Any:
        """The stored value or None."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        """Store a value; it is durable once :meth:`durable` returned."""

    async def durable(self) -> None:
        """Wait until every value stored so far survives a crash."""


@dataclass
class _Sent:
    future: Any
    partition: int | None
    key: Any
    value: Any
    key_serializer: Any
    value_serializer: Any


class VersionTable(faust.Table):
    """A faust table whose changelog writes can be awaited (see the module docstring)."""

    retry_delay_s = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacked: list[_Sent] = []

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: Any = None,
        value_serializer: Any = None,
    ) -> Any:
        """faust's changelog send, remembering the record until the broker acknowledged it."""
        future = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self._unacked.append(_Sent(future, partition, key, value, key_serializer, value_serializer))
        return future

    async def durable(self) -> None:
        """Wait for every changelog record sent so far; records the broker refused are re-sent."""
        while self._unacked:
            sent, self._unacked = self._unacked, []
            results = await asyncio.gather(*(s.future for s in sent), return_exceptions=True)
            failed = [s for s, r in zip(sent, results, strict=True) if isinstance(r, Exception)]
            if not failed:
                continue
            log.warning("%d changelog records failed (%r); re-sending", len(failed), results[0])
            await asyncio.sleep(self.retry_delay_s)
            for s in failed:  # one record per key per batch, so re-sending keeps the order
                self.send_changelog(
                    s.partition, s.key, s.value, s.key_serializer, s.value_serializer
                )


class MemoryStates(dict[bytes, Any]):
    """:class:`StateStore` in a dict, for tests and tools without Kafka."""

    async def durable(self) -> None:
        """Nothing to wait for."""


class PendingStates:
    """States decided by ``prepare`` for batches the sink has not written yet.

    Later batches are judged against them, so an event is not fetched again while an earlier
    batch with a newer version of its listing is still being encoded. Each entry remembers the
    source record whose event decided it; the sink releases it once that event is written or
    dead-lettered.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[int, ListingState, object]] = {}

    def get(self, key: bytes) -> ListingState | None:
        """The pending state of a listing, if a batch in flight decided one."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, key: bytes, partition: int, state: ListingState, owner: object) -> None:
        """``owner`` (the event's source record) will write ``state`` unless it fails."""
        self._entries[key] = (partition, state, owner)

    def release(self, key: bytes, owner: object) -> None:
        """``owner`` is done (its state is durable, or it was dead-lettered)."""
        entry = self._entries.get(key)
        if entry is not None and entry[2] is owner:
            del self._entries[key]

    def forget(self, partitions: set[int]) -> None:
        """Revoked partitions: their in-flight decisions belong to the next owner."""
        self._entries = {k: v for k, v in self._entries.items() if v[0] not in partitions}
