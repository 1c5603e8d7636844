"""What flows through the pipeline: source records and the work done on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas import DeadLetter, ListingEvent
from streams.guard import ListingState, Verdict


@dataclass(frozen=True)
class SourceRecord:
    """One record of the listing events topic, bytes untouched."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    epoch: int = 0  # the partition's ownership epoch at delivery (streams.ownership)


@dataclass
class Work:
    """One record on its way through the stages."""

    record: SourceRecord
    event: ListingEvent | None = None
    verdict: Verdict | None = None
    base: ListingState | None = None  # the listing's state before this event
    dead_letter: DeadLetter | None = None
    image_sha256: str | None = None
    tensor: np.ndarray | None = None
    unchanged: bool = False
    embedding: np.ndarray | None = None
    mismatch: float | None = None
    image_vector: np.ndarray | None = None  # the cover in the model's shared space, if it has one
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_encoding(self) -> bool:
        """An embed verdict with a preprocessed image and no dead letter yet."""
        return (
            self.verdict is Verdict.EMBED
            and self.dead_letter is None
            and not self.unchanged
            and self.tensor is not None
        )
