"""Mismatch negatives of the three kinds."""

from __future__ import annotations

import numpy as np

from encoders.negatives import ListingMeta, SwapSampler, heldout_swaps

# Two categories; product p1 in red/blue, p2 in red/green, p3 single; category B: p4 (2 colours).
TITLES = ["p1 red", "p1 blue", "p2 red", "p2 green", "p3 black", "p4 red", "p4 blue", "p4 blue"]
CATS = ["A", "A", "A", "A", "A", "B", "B", "B"]
PRODUCTS = ["p1", "p1", "p2", "p2", None, "p4", "p4", "p4"]
PAIRS = np.asarray([[0, 1], [2, 3], [5, 6], [6, 7]])


def _meta() -> ListingMeta:
    return ListingMeta.build(TITLES, CATS, PRODUCTS, PAIRS)


def test_kinds_follow_their_definitions() -> None:
    meta = _meta()
    sampler = SwapSampler(meta, np.arange(len(TITLES)))
    rng = np.random.default_rng(0)
    for _ in range(50):
        j = sampler.draw(0, "same_product", rng)
        assert j == 1  # same product, other title
        j = sampler.draw(0, "same_category", rng)
        assert j in (2, 3, 4)  # same category, other product group
        j = sampler.draw(0, "other_category", rng)
        assert j in (5, 6, 7)
    # Listing 6 and 7 share a title: never a same_product negative of each other.
    assert all(sampler.draw(6, "same_product", rng) == 5 for _ in range(20))
    # A product with one variant has no same_product negative.
    assert sampler.draw(4, "same_product", rng) == -1


def test_kinds_need_their_fields() -> None:
    assert _meta().available_kinds() == ("other_category", "same_category", "same_product")
    bare = ListingMeta.build(TITLES, [None] * 8, [None] * 8, PAIRS)
    assert bare.available_kinds() == ()
    no_products = ListingMeta.build(TITLES, CATS, [None] * 8, PAIRS)
    assert no_products.available_kinds() == ("other_category", "same_category")


def test_without_products_the_coclick_component_is_the_group() -> None:
    meta = ListingMeta.build(TITLES, CATS, [None] * 8, PAIRS)
    sampler = SwapSampler(meta, np.arange(8))
    rng = np.random.default_rng(1)
    # 0 and 1 are co-clicked: 1 is never a same_category negative for 0.
    assert all(sampler.draw(0, "same_category", rng) in (2, 3, 4) for _ in range(50))


def test_heldout_swaps_are_deterministic() -> None:
    meta = _meta()
    anchors = np.arange(8)
    a = heldout_swaps(meta, anchors, anchors, seed=3)
    b = heldout_swaps(meta, anchors, anchors, seed=3)
    assert a.keys() == b.keys() == {"other_category", "same_category", "same_product"}
    for kind in a:
        assert np.array_equal(a[kind][0], b[kind][0]) and np.array_equal(a[kind][1], b[kind][1])
        assert (a[kind][0] != a[kind][1]).all()
