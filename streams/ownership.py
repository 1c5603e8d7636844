"""Which partitions this replica may write for, and since when (pure).

Every assignment of a partition starts a new *epoch*; records carry the epoch they were
delivered in. A revocation fences the partition at once, before the rebalance completes, so
work delivered under an earlier epoch is abandoned instead of written: two replicas never
write one listing, and no write reaches Milvus for a partition this replica no longer owns.
"""

from __future__ import annotations

from collections.abc import Iterable

Key = tuple[str, int]


class Ownership:
    """Epoch per partition; a partition is *held* from its assignment to its revocation."""

    def __init__(self) -> None:
        self._epochs: dict[Key, int] = {}
        self._held: set[Key] = set()

    def assign(self, keys: Iterable[Key]) -> None:
        """The group gave these partitions to this replica: a new epoch for each."""
        for key in keys:
            self._epochs[key] = self._epochs.get(key, 0) + 1
            self._held.add(key)

    def fence(self, keys: Iterable[Key]) -> None:
        """The partitions are being revoked: nothing delivered before may be written."""
        self._held.difference_update(keys)

    def epoch(self, key: Key) -> int | None:
        """The current epoch of a held partition; None when it is not held."""
        return self._epochs[key] if key in self._held else None

    def holds(self, key: Key, epoch: int) -> bool:
        """True while the partition is held in the same epoch as ``epoch``."""
        return key in self._held and self._epochs.get(key) == epoch

    def held(self) -> set[Key]:
        """The partitions held now."""
        return set(self._held)


class EveryPartition(Ownership):
    """Holds every partition forever, at epoch 0 (tools and tests without a consumer group)."""

    def epoch(self, key: Key) -> int | None:
        """Always 0."""
        return 0

    def holds(self, key: Key, epoch: int) -> bool:
        """True unless the partition was fenced."""
        return key not in self._fenced

    def fence(self, keys: Iterable[Key]) -> None:
        """Fence these partitions for good."""
        self._fenced.update(keys)

    def __init__(self) -> None:
        super().__init__()
        self._fenced: set[Key] = set()
