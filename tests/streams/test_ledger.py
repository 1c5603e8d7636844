"""The offset ledger: commits never move past an offset that was not delivered and finished."""

from __future__ import annotations

import random

from streams.ledger import OffsetLedger


def ledger_from(start: int, partition: int = 0) -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.start("t", partition, start)
    return ledger


def test_commits_stop_at_the_first_unfinished_offset() -> None:
    ledger = ledger_from(10)
    for offset in range(10, 15):
        assert ledger.register("t", 0, offset) is None
    ledger.finish("t", 0, 12)
    ledger.finish("t", 0, 13)
    assert ledger.committable() == {}
    ledger.finish("t", 0, 10)
    assert ledger.committable() == {("t", 0): 11}
    ledger.mark_committed({("t", 0): 11})
    assert ledger.committable() == {}
    ledger.finish("t", 0, 11)
    assert ledger.committable() == {("t", 0): 14}
    assert ledger.unfinished() == 1


def test_random_orders_never_commit_past_an_undelivered_or_unfinished_offset() -> None:
    """Deliveries skip ahead (the consumer dropped records), go back (seeks) and repeat."""
    rng = random.Random(3)
    for _ in range(200):
        ledger = ledger_from(100, 1)
        deliveries = list(range(100, 140))
        for _ in range(3):  # a skipped stretch, delivered again after a seek back
            i = rng.randrange(len(deliveries) - 5)
            deliveries = deliveries[:i] + deliveries[i + rng.randrange(1, 5) :] + deliveries[i:]
        delivered: set[int] = set()
        done: set[int] = set()
        in_flight: list[int] = []
        for offset in deliveries:
            ledger.register("t", 1, offset)
            delivered.add(offset)
            in_flight.append(offset)
            rng.shuffle(in_flight)
            while in_flight and rng.random() < 0.5:
                finished = in_flight.pop()
                ledger.finish("t", 1, finished)
                done.add(finished)
            commit = ledger.committable().get(("t", 1))
            if commit is not None:
                assert set(range(100, commit)) <= done, (deliveries, commit)
        for offset in in_flight:
            ledger.finish("t", 1, offset)
        assert ledger.committable() == {("t", 1): 140}
        assert ledger.holes() == {} and ledger.unfinished() == 0
        assert ledger.passed() == 40


def test_a_skipped_stretch_asks_for_a_seek_and_blocks_commits() -> None:
    ledger = ledger_from(0)
    for offset in (0, 1, 2):
        ledger.register("t", 0, offset)
    assert ledger.register("t", 0, 6) == 3  # 3, 4, 5 were never delivered
    assert ledger.register("t", 0, 7) is None
    for offset in (0, 1, 2, 6, 7):
        ledger.finish("t", 0, offset)
    assert ledger.committable() == {("t", 0): 3}
    assert ledger.holes() == {("t", 0): 3}
    for offset in (3, 4, 5):  # redelivered after the seek
        assert ledger.register("t", 0, offset) is None
        ledger.finish("t", 0, offset)
    assert ledger.committable() == {("t", 0): 8}
    assert ledger.holes() == {}


def test_a_redelivery_that_starts_inside_the_hole_asks_again() -> None:
    ledger = ledger_from(0)
    ledger.register("t", 0, 0)
    assert ledger.register("t", 0, 10) == 1
    assert ledger.register("t", 0, 5) == 1  # 1..4 still missing
    assert ledger.holes() == {("t", 0): 1}


def test_a_hole_is_never_guessed_away() -> None:
    """A replay cut short looks like offsets that do not exist: commits wait for the events."""
    ledger = ledger_from(0)
    ledger.register("t", 0, 0)
    assert ledger.register("t", 0, 3) == 1
    for offset in (0, 3):
        ledger.finish("t", 0, offset)
    assert ledger.register("t", 0, 3) is None  # again after a seek: 1 and 2 were dropped again
    assert ledger.committable() == {("t", 0): 1}
    assert ledger.holes() == {("t", 0): 1}


def test_replays_and_untracked_partitions_change_nothing() -> None:
    ledger = ledger_from(5)
    ledger.register("t", 0, 5)
    ledger.finish("t", 0, 5)
    assert ledger.register("t", 0, 3) is None  # below the frontier: already finished
    assert ledger.register("t", 9, 1) is None  # not started: not ours
    assert ledger.committable() == {("t", 0): 6}
    ledger.forget("t", 0)
    assert ledger.committable() == {} and not ledger.started("t", 0)


def test_position_is_where_processing_has_reached() -> None:
    ledger = OffsetLedger()
    assert ledger.position("t", 0) is None
    ledger.start("t", 0, 10)
    for offset in (10, 11, 12):
        ledger.register("t", 0, offset)
    assert ledger.position("t", 0) == 10  # nothing finished yet: the first in flight
    ledger.finish("t", 0, 11)
    assert ledger.position("t", 0) == 10  # 10 still unfinished
    ledger.finish("t", 0, 10)
    assert ledger.position("t", 0) == 12
    ledger.finish("t", 0, 12)
    assert ledger.position("t", 0) == 13
