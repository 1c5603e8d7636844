"""The version guard: which listing events still matter (pure functions).

Per listing the embedder keeps a :class:`ListingState` in a faust table backed by a changelog
topic: the newest version seen, whether the listing is deleted (a tombstone, so a late create
cannot resurrect it), and the title hash and image sha256 of the row in Milvus (to spot
metadata-only edits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas import EventType, ListingEvent


class Verdict(StrEnum):
    """What to do with an event, before its image is fetched."""

    STALE = "skipped_stale"  # older than the newest version seen
    ANNOUNCE = "announced_again"  # the newest version seen: durable, its event maybe not sent
    DELETE = "deleted"
    EMBED = "embedded"


@dataclass(frozen=True)
class ListingState:
    """Newest version seen of one listing and what its Milvus row was built from."""

    version: int
    deleted: bool = False
    title_hash: str | None = None
    image_sha256: str | None = None
    # What the embedded event of this version said, to announce it again after a crash.
    outcome: str | None = None
    mismatch: float | None = None
    write_token: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Compact form stored in the table's changelog."""
        data: dict[str, Any] = {
            "v": self.version,
            "d": self.deleted,
            "t": self.title_hash,
            "i": self.image_sha256,
        }
        for name, value in (("o", self.outcome), ("m", self.mismatch), ("w", self.write_token)):
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Any) -> ListingState | None:
        """Inverse of :meth:`to_json`; None for anything unreadable (treated as unknown)."""
        if isinstance(data, ListingState):
            return data
        if not isinstance(data, dict) or not isinstance(data.get("v"), int):
            return None
        mismatch, token = data.get("m"), data.get("w")
        return cls(
            int(data["v"]),
            bool(data.get("d")),
            data.get("t"),
            data.get("i"),
            data.get("o"),
            float(mismatch) if isinstance(mismatch, int | float) else None,
            token if isinstance(token, int) else None,
        )


def title_hash(title: str) -> str:
    """Stable hash of a title, for change detection."""
    return hashlib.sha256(title.encode("utf-8")).hexdigest()[:32]


def judge(state: ListingState | None, event: ListingEvent) -> Verdict:
    """Skip events below the newest version seen, announce it again; else delete or embed."""
    if state is not None and event.version < state.version:
        return Verdict.STALE
    if state is not None and event.version == state.version:
        return Verdict.ANNOUNCE
    if event.event_type is EventType.DELETED:
        return Verdict.DELETE
    return Verdict.EMBED


def is_unchanged(state: ListingState | None, event: ListingEvent, image_sha256: str) -> bool:
    """True when the live row was built from the same title and cover image bytes."""
    return (
        state is not None
        and not state.deleted
        and state.image_sha256 == image_sha256
        and event.title is not None
        and state.title_hash == title_hash(event.title)
    )


def after_write(
    event: ListingEvent,
    image_sha256: str | None,
    *,
    outcome: str | None = None,
    mismatch: float | None = None,
    write_token: int | None = None,
) -> ListingState:
    """The state once the event's row was written (or removed)."""
    if event.event_type is EventType.DELETED:
        return ListingState(event.version, deleted=True, outcome=outcome, write_token=write_token)
    assert event.title is not None
    return ListingState(
        event.version,
        False,
        title_hash(event.title),
        image_sha256,
        outcome,
        mismatch,
        write_token,
    )
