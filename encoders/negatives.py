"""Mismatch negatives like real ones: a listing's title paired with another listing's cover.

Three kinds, from easiest to hardest (numpy only):

* ``other_category``: the cover of a listing from another category (needs ``category``);
* ``same_category``: the cover of another product of the same category, never a co-click
  partner nor in the same product group;
* ``same_product``: the cover of the same product in another variant (another colour), i.e. a
  listing with the same ``product`` id but a different title (needs ``product``).

A listing's *group* is its ``product`` id when the data gives one, else its co-click connected
component; covers from the anchor's own group are never used as ``other_category`` or
``same_category`` negatives, since they may well show what the title says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("other_category", "same_category", "same_product")
_TRIES = 12


def _codes(values: Sequence[str | None]) -> np.ndarray:
    """Integer codes per distinct value; ``None`` is -1."""
    table: dict[str, int] = {}
    return np.asarray(
        [-1 if v is None else table.setdefault(v, len(table)) for v in values], np.int64
    )


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[ra] = rb
    return np.asarray([find(i) for i in range(n)], np.int64)


@dataclass(frozen=True)
class ListingMeta:
    """Per-listing integer codes that negative sampling needs."""

    category: np.ndarray  # -1: unknown
    product: np.ndarray  # -1: unknown
    group: np.ndarray  # product, else co-click component
    title: np.ndarray  # equal titles share a code

    @classmethod
    def build(
        cls,
        titles: Sequence[str],
        categories: Sequence[str | None],
        products: Sequence[str | None],
        pairs: np.ndarray,
    ) -> ListingMeta:
        """Codes from the listings' fields and their co-click pairs."""
        product = _codes(products)
        component = _components(len(titles), pairs)
        group = np.where(product >= 0, product, component + product.max(initial=-1) + 1)
        return cls(_codes(categories), product, group, _codes(list(titles)))

    def available_kinds(self) -> tuple[str, ...]:
        """The kinds this data can produce."""
        kinds = []
        if (self.category >= 0).any():
            kinds += ["other_category", "same_category"]
        if (self.product >= 0).any():
            kinds.append("same_product")
        return tuple(kinds)


class SwapSampler:
    """Draws, for an anchor listing, the listing whose cover becomes a negative of one kind."""

    def __init__(self, meta: ListingMeta, pool: np.ndarray) -> None:
        self.meta = meta
        self.pool = np.asarray(pool, np.int64)
        self._by_category = self._index(meta.category)
        self._by_product = self._index(meta.product)

    def _index(self, codes: np.ndarray) -> dict[int, np.ndarray]:
        order = self.pool[np.argsort(codes[self.pool], kind="stable")]
        keys, starts = np.unique(codes[order], return_index=True)
        parts = np.split(order, starts[1:])
        return {int(k): part for k, part in zip(keys, parts, strict=True) if k >= 0}

    def draw(self, anchor: int, kind: str, rng: np.random.Generator) -> int:
        """Index of the listing whose cover to pair with ``anchor``'s title, or -1 if none."""
        m = self.meta
        if kind == "same_product":
            candidates = self._by_product.get(int(m.product[anchor]))
        elif kind == "same_category":
            candidates = self._by_category.get(int(m.category[anchor]))
        else:
            candidates = self.pool
        if candidates is None or len(candidates) < 2:
            return -1
        for j in candidates[rng.integers(len(candidates), size=_TRIES)]:
            if m.title[j] == m.title[anchor]:
                continue
            if kind == "same_product":
                return int(j)
            if m.group[j] == m.group[anchor]:
                continue
            same_category = m.category[j] == m.category[anchor]
            if (kind == "same_category") == bool(same_category):
                return int(j)
        return -1

    def draw_many(
        self, anchors: np.ndarray, kinds: Sequence[str], rng: np.random.Generator
    ) -> np.ndarray:
        """:meth:`draw` for each ``(anchor, kind)``."""
        return np.asarray(
            [self.draw(int(a), k, rng) for a, k in zip(anchors, kinds, strict=True)], np.int64
        )


def heldout_swaps(
    meta: ListingMeta, anchors: np.ndarray, pool: np.ndarray, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each available kind: ``(title_listing, cover_listing)`` index arrays, one try per anchor.

    Deterministic for a given seed, so reports from training and `vitrine evaluate` agree.
    """
    sampler = SwapSampler(meta, pool)
    out = {}
    for offset, kind in enumerate(meta.available_kinds()):
        rng = np.random.default_rng(seed + offset)
        covers = sampler.draw_many(anchors, [kind] * len(anchors), rng)
        keep = covers >= 0
        out[kind] = (np.asarray(anchors)[keep], covers[keep])
    return out
