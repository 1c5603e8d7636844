"""The version plan and partition ownership (pure)."""

from __future__ import annotations

import random

from streams.decide import Action, Candidate, plan
from streams.guard import ListingState
from streams.ownership import Ownership


def c(version: int, listing: bytes = b"X", writable: bool = True) -> Candidate:
    return Candidate(listing, version, writable)


def test_the_newest_candidate_above_the_durable_version_is_written() -> None:
    durable = {b"X": ListingState(2)}
    assert plan([c(3), c(5), c(1), c(4)], durable.get) == [
        Action.SKIP,
        Action.WRITE,
        Action.SKIP,
        Action.SKIP,
    ]


def test_nothing_above_the_durable_version_announces_the_equal_one_again() -> None:
    durable = {b"X": ListingState(4, deleted=True)}
    assert plan([c(1), c(4), c(4), c(3)], durable.get) == [
        Action.SKIP,
        Action.ANNOUNCE,
        Action.SKIP,
        Action.SKIP,
    ]
    assert plan([c(2), c(3)], durable.get) == [Action.SKIP, Action.SKIP]


def test_a_candidate_without_a_row_is_never_written() -> None:
    nothing: dict[bytes, ListingState] = {}
    assert plan([c(7, writable=False), c(6)], nothing.get) == [Action.SKIP, Action.WRITE]


def test_listings_are_planned_independently_and_never_go_back() -> None:
    rng = random.Random(3)
    for _ in range(300):
        durable = {k: ListingState(rng.randrange(5)) for k in (b"A", b"B") if rng.random() < 0.7}
        cands = [
            c(rng.randrange(8), rng.choice([b"A", b"B"]), rng.random() < 0.8) for _ in range(6)
        ]
        actions = plan(cands, durable.get)
        for listing in (b"A", b"B"):
            floor = durable[listing].version if listing in durable else -1
            mine = [(x, a) for x, a in zip(cands, actions, strict=True) if x.listing == listing]
            written = [x.version for x, a in mine if a is Action.WRITE]
            assert len(written) <= 1
            assert all(v > floor for v in written)
            if written:
                assert written[0] == max(x.version for x, _ in mine if x.writable)
            announced = [x.version for x, a in mine if a is Action.ANNOUNCE]
            assert announced in ([], [floor])
            assert not (written and announced)


def test_a_fenced_partition_is_not_held_and_a_new_assignment_is_a_new_epoch() -> None:
    own = Ownership()
    own.assign([("t", 0), ("t", 1)])
    first = own.epoch(("t", 0))
    assert first is not None and own.holds(("t", 0), first)
    own.fence([("t", 0)])
    assert own.epoch(("t", 0)) is None and not own.holds(("t", 0), first)
    own.assign([("t", 0)])
    second = own.epoch(("t", 0))
    assert second is not None and second != first
    assert not own.holds(("t", 0), first) and own.holds(("t", 0), second)
    assert own.held() == {("t", 0), ("t", 1)}
