"""The explorer API's query parsing and reply shaping (no network)."""

from __future__ import annotations

import pytest

from app.explorer.catalog import CatalogEntry
from app.explorer.web import BadQuery, card, parse_filters
from schemas import Price


def test_no_parameters_means_no_filters() -> None:
    assert parse_filters({}) is None
    assert parse_filters({"category": ["  "], "max_mismatch": [""]}) is None


def test_every_filter_parameter_maps_to_the_contract() -> None:
    filters = parse_filters(
        {
            "category": ["Hoodies & Sweatshirts", "shoes"],
            "price_min": ["10"],
            "price_max": ["99.5"],
            "currency": ["eur"],
            "max_mismatch": ["0.4"],
        }
    )
    assert filters is not None
    assert set(filters.categories or ()) == {"Hoodies & Sweatshirts", "shoes"}
    assert filters.price_range is not None
    assert (filters.price_range.min, filters.price_range.max) == (10.0, 99.5)
    assert filters.price_range.currency == "EUR"
    assert filters.max_mismatch == 0.4


@pytest.mark.parametrize(
    "params",
    [
        {"max_mismatch": ["abc"]},
        {"max_mismatch": ["1.5"]},
        {"price_min": ["5"]},  # no currency
        {"price_min": ["9"], "price_max": ["1"], "currency": ["EUR"]},
        {"currency": ["EUR"], "price_min": ["1"], "price_max": ["nan"]},
        {"category": ["line\nbreak"]},
        {"max_mismatch": ["0.1", "0.2"]},
    ],
)
def test_bad_parameters_are_refused_with_a_reason(params: dict[str, list[str]]) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_filters(params)
    assert caught.value.reason == "invalid_filter"


def test_cards_never_carry_the_sellers_image_url() -> None:
    entry = CatalogEntry("L1", 2, "Grey hoodie", "https://seller.example/x.jpg", "Topwear",
                         Price(amount=5, currency="EUR"))  # fmt: skip
    drawn = card("L1", entry, score=0.9, mismatch=0.1)
    assert drawn["thumb"] == "/thumb/L1"
    assert "seller.example" not in str(drawn)
    assert drawn["price"] == {"amount": 5.0, "currency": "EUR"}
    assert card("L2", None)["thumb"] is None
