"""Reply building from hits (pure)."""

from __future__ import annotations

import math

from recall.index import Hit
from recall.replies import item_from_hit, safe_model_version, select_items


def test_seed_and_repeats_are_dropped_and_k_kept() -> None:
    hits = [Hit("seed", 1.0), Hit("a", 0.9), Hit("a", 0.9), Hit("b", 0.8), Hit("c", 0.7)]
    assert [i.listing_id for i in select_items(hits, 2, exclude="seed")] == ["a", "b"]


def test_fields_outside_the_contract_are_left_out_not_fatal() -> None:
    item = item_from_hit(Hit("a", 0.5, 1.0000001, "", 5.0, "euro", "m1"))
    assert item is not None
    assert item.mismatch_score == 1.0 and item.category is None and item.price is None
    assert item_from_hit(Hit("a", math.nan)) is None
    assert item_from_hit(Hit("bad id", 0.5)) is None


def test_model_version_falls_back_to_a_valid_one() -> None:
    assert safe_model_version(None, "bad version!", "m2", default="d") == "m2"
    assert safe_model_version(None, default="d") == "d"
