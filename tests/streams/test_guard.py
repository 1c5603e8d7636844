"""Version guard, batch de-duplication and settings validation (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import ListingEvent, decode_listing_event
from streams.guard import ListingState, Verdict, after_write, is_unchanged, judge
from streams.settings import EmbedderSettings
from streams.sink import Mutation, newest_per_listing
from tests.streams.harness import encode_json, listing_event
from vitrine.errors import ConfigError
from vitrine.settings import load


def event(version: int, kind: str = "updated", **kw: Any) -> ListingEvent:
    return decode_listing_event(encode_json(listing_event("L1", version, kind, **kw)))


def test_older_versions_are_stale_the_newest_seen_is_announced_again() -> None:
    state = ListingState(5)
    assert judge(state, event(5)) is Verdict.ANNOUNCE
    assert judge(state, event(4)) is Verdict.STALE
    assert judge(state, event(6)) is Verdict.EMBED
    assert judge(None, event(1, "created")) is Verdict.EMBED


def test_tombstone_blocks_late_creates_but_not_newer_ones() -> None:
    tomb = after_write(event(7, "deleted"), None)
    assert tomb.deleted
    assert judge(tomb, event(3, "created")) is Verdict.STALE
    assert judge(tomb, event(8, "created")) is Verdict.EMBED
    assert judge(ListingState(2), event(3, "deleted")) is Verdict.DELETE


def test_unchanged_needs_same_title_and_image_bytes() -> None:
    state = after_write(event(1, title="red car"), "abc")
    assert is_unchanged(state, event(2, title="red car", price=99.0), "abc")
    assert not is_unchanged(state, event(2, title="blue car"), "abc")
    assert not is_unchanged(state, event(2, title="red car"), "def")
    assert not is_unchanged(ListingState(1, deleted=True), event(2), "abc")


def test_state_round_trips_through_json() -> None:
    state = after_write(event(1), "abc")
    assert ListingState.from_json(state.to_json()) == state
    full = after_write(event(2), "abc", outcome="embedded", mismatch=0.25, write_token=7)
    assert ListingState.from_json(full.to_json()) == full
    assert ListingState.from_json("junk") is None


def test_newest_per_listing() -> None:
    muts = [
        Mutation("a", 1, {}),
        Mutation("b", 2, None),
        Mutation("a", 3, None),
        Mutation("a", 2, {}),
    ]
    kept = {m.listing_id: m for m in newest_per_listing(muts)}
    assert kept["a"].version == 3 and kept["a"].row is None
    assert len(kept) == 2


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="VITRINE_BATCH_SIZE"):
        load(EmbedderSettings, batch_size=0)
    with pytest.raises(ConfigError, match="VITRINE_MILVUS_BACKOFF_MAX_S"):
        load(EmbedderSettings, milvus_backoff_s=5, milvus_backoff_max_s=1)
    s = load(EmbedderSettings)
    assert s.metrics_port == 9464 and not s.allow_loopback_images
    assert s.resolved_model_dir == s.home / "models" / "cpu"
