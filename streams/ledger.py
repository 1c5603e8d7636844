"""Which offsets may be committed: the lowest unfinished offset of each partition (pure).

Offsets are registered in the order the consumer delivers them and finished in any order;
:meth:`OffsetLedger.committable` only ever moves past an offset once it and every earlier
offset of its partition are finished. This is the whole at-least-once argument of the
embedder (docs/embedder.md), so it has no I/O and is tested on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: OrderedDict[int, bool] = field(default_factory=OrderedDict)  # offset -> finished
    next_offset: int | None = None  # what Kafka should resume from
    committed: int | None = None  # what was last handed to Kafka


class OffsetLedger:
    """Per-partition bookkeeping of in-flight offsets."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], _Partition] = {}

    def register(self, topic: str, partition: int, offset: int) -> None:
        """An event was received; it is unfinished until :meth:`finish`."""
        part = self._parts.setdefault((topic, partition), _Partition())
        if offset in part.pending:
            return  # redelivered while still in flight
        if part.pending and offset < next(reversed(part.pending)):
            # The consumer went back (seek after a rebalance): older entries are void.
            part.pending.clear()
        part.pending[offset] = False

    def finish(self, topic: str, partition: int, offset: int) -> None:
        """The event's side effects (row, dead letter, skip) are done."""
        part = self._parts.get((topic, partition))
        if part is None or offset not in part.pending:
            return
        part.pending[offset] = True
        while part.pending:
            first, done = next(iter(part.pending.items()))
            if not done:
                break
            part.pending.popitem(last=False)
            part.next_offset = first + 1

    def committable(self) -> dict[tuple[str, int], int]:
        """Partition -> offset to commit, for partitions that moved since the last commit."""
        out = {}
        for key, part in self._parts.items():
            if part.next_offset is not None and part.next_offset != part.committed:
                out[key] = part.next_offset
        return out

    def mark_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Kafka accepted these offsets."""
        for key, offset in offsets.items():
            if key in self._parts:
                self._parts[key].committed = offset

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its in-flight events belong to the next owner."""
        self._parts.pop((topic, partition), None)

    def position(self, topic: str, partition: int) -> int | None:
        """The offset processing has reached: everything below it is finished (None: unknown)."""
        part = self._parts.get((topic, partition))
        if part is None:
            return None
        if part.next_offset is not None:
            return part.next_offset
        return next(iter(part.pending), None)

    def unfinished(self) -> int:
        """Events registered and not finished."""
        return sum(
            sum(1 for done in part.pending.values() if not done) for part in self._parts.values()
        )
