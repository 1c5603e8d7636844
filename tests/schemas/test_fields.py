"""Field rules that real catalogues exercise: categories are free text, within limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import ListingEvent, RecallFilters, limits, validator_for
from schemas.registry import LISTING_EVENT, RECALL_REQUEST

_LISTING: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "e-1",
    "event_type": "created",
    "listing_id": "L1",
    "version": 1,
    "occurred_at": "2026-11-21T05:39:00Z",
    "title": "Grey hoodie",
    "image_urls": ["https://img.example/1.jpg"],
    "price": {"amount": 20, "currency": "EUR"},
    "seller_id": "s1",
    "marketplace": "de",
}

REAL_CATEGORIES = [
    "Hoodies & Sweatshirts",
    "Topwear",
    "home/kitchen/knives",
    "Küche > Messer",
    "女装 / 连衣裙",
    "Kids' shoes (EU 20-35)",
    "Rugs 5'x7\" and up",
    "back\\slash",
    "x" * limits.MAX_CATEGORY_CHARS,
]
BAD_CATEGORIES = [
    "",
    " ",
    "\t  ",
    "line\nbreak",
    "nul\x00",
    "del\x7f",
    "c1\x85",
    "x" * (limits.MAX_CATEGORY_CHARS + 1),
]


@pytest.mark.parametrize("category", REAL_CATEGORIES)
def test_real_category_names_are_accepted_by_schema_and_model(category: str) -> None:
    payload = {**_LISTING, "category": category}
    assert validator_for(LISTING_EVENT).is_valid(payload)
    assert ListingEvent.model_validate(payload).category == category
    request = {"schema_version": 1, "request_id": "r1", "query": {"listing_id": "L1"}, "k": 5,
               "filters": {"categories": [category]}}  # fmt: skip
    assert validator_for(RECALL_REQUEST).is_valid(request)
    assert RecallFilters(categories=(category,)).categories == (category,)


@pytest.mark.parametrize("category", BAD_CATEGORIES)
def test_blank_control_or_overlong_categories_are_refused_by_both(category: str) -> None:
    payload = {**_LISTING, "category": category}
    assert not validator_for(LISTING_EVENT).is_valid(payload)
    with pytest.raises(ValidationError):
        ListingEvent.model_validate(payload)


def test_category_column_holds_the_longest_category_in_bytes() -> None:
    from vitrine.vectorstore import CATEGORY_BYTES

    assert CATEGORY_BYTES >= limits.MAX_CATEGORY_BYTES
    assert len(("😀" * limits.MAX_CATEGORY_CHARS).encode()) <= CATEGORY_BYTES


@pytest.mark.timeout(30)
def test_an_overlong_category_is_refused_in_linear_time() -> None:
    # A quadratic pattern needs hours for this; the decoder must answer at once, also when
    # the schema reports the length and the pattern together.
    from schemas import ContractError, decode_listing_event

    payload = {**_LISTING, "category": "a" * 200_000 + "\x00"}
    with pytest.raises(ContractError):
        decode_listing_event(json.dumps(payload).encode())
