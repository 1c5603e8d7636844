"""What flows through the pipeline: a source record and the stages of its lifecycle.

One event moves through frozen values, each stage returning the next one:

``SourceRecord`` → :class:`Decoded` (or :class:`Rejected`) → per listing, in ``prepare``:
:class:`Skipped`, :class:`Announce`, :class:`Delete`, :class:`Fetched` or :class:`Unchanged`
→ ``encode`` turns :class:`Fetched` into :class:`Encoded` (or :class:`Rejected`) → the sink
(:class:`~streams.checkpoint.Checkpoint`) decides against the durable state, turns a reusable
:class:`Unchanged` into :class:`Encoded` (``reused``), and makes each outcome durable.

Every value keeps its :class:`SourceRecord` (the same object from intake to the ledger), which
is also the token of the pending version state it may hold (:class:`~streams.state.PendingStates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas import DeadLetter, ListingEvent


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


@dataclass(frozen=True, eq=False)
class Decoded:
    """A valid listing event, not judged yet."""

    record: SourceRecord
    event: ListingEvent

    @property
    def listing(self) -> bytes:
        """The listing id as the version state's key."""
        return self.event.listing_id.encode()


@dataclass(frozen=True, eq=False)
class Rejected:
    """Dead-lettered at some stage; ``event`` is None when the bytes never decoded."""

    record: SourceRecord
    dead_letter: DeadLetter
    event: ListingEvent | None = None


@dataclass(frozen=True, eq=False)
class Skipped(Decoded):
    """Older than the newest version seen, or superseded by a newer one in the batch."""


@dataclass(frozen=True, eq=False)
class Announce(Decoded):
    """The durable version itself: its row is written, its embedded event is sent again."""


@dataclass(frozen=True, eq=False)
class Delete(Decoded):
    """A delete event to apply."""


@dataclass(frozen=True, eq=False)
class Unchanged(Decoded):
    """Title and cover bytes equal the live row's: the row's vectors are reused."""

    image_sha256: str


@dataclass(frozen=True, eq=False)
class Fetched(Decoded):
    """Cover fetched and preprocessed into the image tower's input."""

    image_sha256: str
    tensor: np.ndarray


@dataclass(frozen=True)
class Vectors:
    """What the model says about one listing."""

    embedding: np.ndarray
    mismatch: float
    image_vector: np.ndarray | None = None  # the cover in the model's shared space, if any


@dataclass(frozen=True, eq=False)
class Encoded(Decoded):
    """A row to upsert: freshly encoded, or ``reused`` from the live row (price-only edit)."""

    image_sha256: str
    vectors: Vectors
    reused: bool = False


#: What ``prepare`` hands to ``encode``.
Prepared = Rejected | Skipped | Announce | Delete | Unchanged | Fetched
#: What ``encode`` hands to the sink.
Ready = Rejected | Skipped | Announce | Delete | Unchanged | Encoded
#: What the sink writes, once it decided and reused rows.
Settled = Rejected | Skipped | Announce | Delete | Encoded
