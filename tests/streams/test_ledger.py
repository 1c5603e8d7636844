"""The offset ledger: commits never move past an unfinished offset."""

from __future__ import annotations

import random

from streams.ledger import OffsetLedger


def test_commits_stop_at_the_first_unfinished_offset() -> None:
    ledger = OffsetLedger()
    for offset in range(10, 15):
        ledger.register("t", 0, offset)
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


def test_random_finish_orders_never_commit_past_unfinished() -> None:
    rng = random.Random(3)
    for _ in range(200):
        ledger = OffsetLedger()
        offsets = sorted(rng.sample(range(1000), 40))  # gaps are allowed
        for offset in offsets:
            ledger.register("t", 1, offset)
        order = offsets[:]
        rng.shuffle(order)
        done: set[int] = set()
        for offset in order:
            ledger.finish("t", 1, offset)
            done.add(offset)
            commit = ledger.committable().get(("t", 1))
            if commit is not None:
                assert all(o in done for o in offsets if o < commit)
                ledger.mark_committed({("t", 1): commit})
        assert ledger.committable() == {} and ledger.unfinished() == 0


def test_partitions_are_independent_and_forgettable() -> None:
    ledger = OffsetLedger()
    ledger.register("t", 0, 5)
    ledger.register("t", 1, 7)
    ledger.finish("t", 1, 7)
    assert ledger.committable() == {("t", 1): 8}
    ledger.forget("t", 0)
    ledger.finish("t", 0, 5)  # finished after revocation: ignored
    assert ledger.committable() == {("t", 1): 8}


def test_a_seek_back_voids_older_pending_entries() -> None:
    ledger = OffsetLedger()
    for offset in (20, 21, 22):
        ledger.register("t", 0, offset)
    ledger.register("t", 0, 20)  # redelivered while in flight: no duplicate
    ledger.register("t", 0, 15)  # the consumer seeked back
    ledger.finish("t", 0, 15)
    assert ledger.committable() == {("t", 0): 16}


def test_position_is_where_processing_has_reached() -> None:
    ledger = OffsetLedger()
    assert ledger.position("t", 0) is None
    for offset in (10, 11, 12):
        ledger.register("t", 0, offset)
    assert ledger.position("t", 0) == 10  # nothing finished yet: the first in flight
    ledger.finish("t", 0, 11)
    assert ledger.position("t", 0) == 10  # 10 still unfinished
    ledger.finish("t", 0, 10)
    assert ledger.position("t", 0) == 12
    ledger.finish("t", 0, 12)
    assert ledger.position("t", 0) == 13
