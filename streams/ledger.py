"""Which offsets may be committed: the first offset not yet finished, per partition (pure).

Each partition is tracked from where the consumer group resumes it (``start``: the committed
offset). Offsets are registered as the consumer delivers them and finished in any order; the
committable offset (the *frontier*) only moves past an offset once that offset was delivered
and finished, so an offset that was never delivered stops it.

That last rule matters because faust does not always deliver every record: around a rebalance
or recovery it can clear records it had fetched into its stream buffers without seeking back,
so the next record delivered is further on. :meth:`OffsetLedger.register` reports such a hole
and the app seeks the partition back to it; the redelivered records fill it. A hole is never
assumed to be offsets that do not exist: a replay can be cut short the same way, so guessing
could skip real events. The source topic must therefore have no such offsets (it is neither
compacted nor written by transactional producers); if it had, commits would stop at the first
one and the lag gauge and a warning would show it, instead of events being lost.

This is the whole at-least-once argument of the embedder (docs/embedder.md), so it has no I/O
and is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, int]


@dataclass
class _Partition:
    start: int  # where tracking began
    frontier: int  # every offset below it is finished: what Kafka should resume from
    expected: int  # the offset after the last one delivered
    committed: int  # what was last handed to Kafka
    pending: dict[int, bool] = field(default_factory=dict)  # offset >= frontier -> finished
    holes: dict[int, int] = field(default_factory=dict)  # start -> end (exclusive), undelivered


class OffsetLedger:
    """Per-partition bookkeeping of delivered, finished and missing offsets."""

    def __init__(self) -> None:
        self._parts: dict[Key, _Partition] = {}
        self._retired = 0  # offsets passed by partitions since forgotten

    def started(self, topic: str, partition: int) -> bool:
        """True when the partition is tracked (:meth:`start` was called since assignment)."""
        return (topic, partition) in self._parts

    def start(self, topic: str, partition: int, offset: int) -> None:
        """Track a newly assigned partition from ``offset``, where the group resumes it."""
        self._parts[(topic, partition)] = _Partition(offset, offset, offset, offset)

    def register(self, topic: str, partition: int, offset: int) -> int | None:
        """An event was delivered; returns an offset to seek back to if some were skipped."""
        part = self._parts.get((topic, partition))
        if part is None or offset < part.frontier:
            return None  # not tracked, or already finished: a replay changes nothing here
        seek = self._fill(part, offset)
        for start, end in self._undelivered(part, part.expected, offset):
            part.holes[start] = end
            seek = start if seek is None else min(seek, start)
        part.pending.setdefault(offset, False)
        part.expected = offset + 1
        self._advance(part)
        return seek

    @staticmethod
    def _undelivered(part: _Partition, start: int, end: int) -> list[tuple[int, int]]:
        """Runs of offsets in [start, end) never delivered (a replay may jump over old ones)."""
        runs: list[tuple[int, int]] = []
        run_start = None
        for offset in range(max(start, part.frontier), end):
            missing = offset not in part.pending and not any(
                s <= offset < e for s, e in part.holes.items()
            )
            if missing and run_start is None:
                run_start = offset
            elif not missing and run_start is not None:
                runs.append((run_start, offset))
                run_start = None
        if run_start is not None:
            runs.append((run_start, end))
        return runs

    @staticmethod
    def _fill(part: _Partition, offset: int) -> int | None:
        """A skipped offset arrived; returns the hole's start if offsets before it still lack."""
        for start, end in list(part.holes.items()):
            if start <= offset < end:
                del part.holes[start]
                if offset + 1 < end:
                    part.holes[offset + 1] = end
                if start < offset:
                    part.holes[start] = offset
                    return start
                return None
        return None

    def finish(self, topic: str, partition: int, offset: int) -> None:
        """The event's side effects (row, dead letter, skip) are durable."""
        part = self._parts.get((topic, partition))
        if part is None or offset not in part.pending:
            return
        part.pending[offset] = True
        self._advance(part)

    @staticmethod
    def _advance(part: _Partition) -> None:
        while part.pending.get(part.frontier) is True:
            del part.pending[part.frontier]
            part.frontier += 1

    def holes(self) -> dict[Key, int]:
        """Partition -> first offset that was skipped and not redelivered yet."""
        return {key: min(part.holes) for key, part in self._parts.items() if part.holes}

    def committable(self) -> dict[Key, int]:
        """Partition -> offset to commit, for partitions that moved since the last commit."""
        return {
            key: part.frontier
            for key, part in self._parts.items()
            if part.frontier != part.committed
        }

    def mark_committed(self, offsets: dict[Key, int]) -> None:
        """Kafka accepted these offsets."""
        for key, offset in offsets.items():
            if key in self._parts:
                self._parts[key].committed = offset

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its in-flight events belong to the next owner."""
        part = self._parts.pop((topic, partition), None)
        if part is not None:
            self._retired += part.frontier - part.start

    def position(self, topic: str, partition: int) -> int | None:
        """The offset processing has reached: everything below it is finished (None: unknown)."""
        part = self._parts.get((topic, partition))
        return None if part is None else part.frontier

    def passed(self) -> int:
        """Offsets the frontiers moved past since this ledger began (each counted once per
        ownership of its partition): what burst mode counts."""
        return self._retired + sum(part.frontier - part.start for part in self._parts.values())

    def unfinished(self) -> int:
        """Events delivered and not finished, plus offsets skipped and not redelivered."""
        return sum(
            sum(1 for done in part.pending.values() if not done)
            + sum(end - start for start, end in part.holes.items())
            for part in self._parts.values()
        )
