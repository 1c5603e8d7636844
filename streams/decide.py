"""Which version of each listing a batch writes, announces again or skips (pure).

The one owner of that decision. It runs in the sink stage, against the durable version state
(which only that stage changes, one batch at a time), so it is right whatever earlier stages
guessed from older state:

- per listing, the newest candidate above the durable version is written (upsert or delete);
  every other candidate of the listing is skipped;
- when no candidate is above it but one equals it, that one is announced again: the version is
  durable, but the process may have died before its embedded event was sent;
- a candidate at or below the durable version is never written, so a row never goes back in
  version and a delete is never undone by an older create (the state keeps a tombstone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from streams.guard import ListingState


class Action(StrEnum):
    """What the sink does with one candidate."""

    WRITE = "write"
    ANNOUNCE = "announce"
    SKIP = "skip"


@dataclass(frozen=True)
class Candidate:
    """A decoded, valid event that reached the sink without a dead letter."""

    listing: bytes
    version: int
    writable: bool  # it carries a row (embedded, or reused) or is a delete


def plan(
    candidates: Sequence[Candidate], durable: Callable[[bytes], ListingState | None]
) -> list[Action]:
    """One action per candidate, in the candidates' order."""
    actions = [Action.SKIP] * len(candidates)
    by_listing: dict[bytes, list[int]] = {}
    for index, candidate in enumerate(candidates):
        by_listing.setdefault(candidate.listing, []).append(index)
    for listing, indexes in by_listing.items():
        state = durable(listing)
        floor = -1 if state is None else state.version
        newest_first = sorted(indexes, key=lambda i: candidates[i].version, reverse=True)
        above = [
            i for i in newest_first if candidates[i].writable and candidates[i].version > floor
        ]
        if above:
            actions[above[0]] = Action.WRITE
            continue
        equal = [i for i in newest_first if candidates[i].version == floor]
        if equal:
            actions[equal[0]] = Action.ANNOUNCE
    return actions
