"""Filter expressions: typed fields only, every literal quoted (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recall.errors import InvalidQuery
from recall.filters import filter_expression, number, quote
from schemas import PriceRange, RecallFilters


def unquote(literal: str) -> str:
    """Read a literal back the way Milvus's lexer does: only \\\\ and \\" are escapes."""
    assert literal.startswith('"') and literal.endswith('"')
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            assert body[i + 1] in '\\"', body
            out.append(body[i + 1])
            i += 2
            continue
        assert ch != '"', f"bare quote inside {literal!r}"
        out.append(ch)
        i += 1
    return "".join(out)


HOSTILE = [
    'x" or 1==1 or category == "y',
    "back\\slash",
    '\\" or true or "',
    "trailing\\",
    "it's",
    "日本語 ✓ é",
    ") or (1 == 1",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_round_trips_hostile_strings(value: str) -> None:
    assert unquote(quote(value)) == value


@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_characters="\x7f")))
def test_quote_round_trips_any_printable_text(value: str) -> None:
    assert unquote(quote(value)) == value


@pytest.mark.parametrize("value", ["new\nline", "nul\x00", "tab\t", "del\x7f"])
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidQuery):
        quote(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1"])
def test_numbers_must_be_finite_numbers(value: object) -> None:
    with pytest.raises(InvalidQuery):
        number(value)  # type: ignore[arg-type]


def test_number_literals_parse_back_exactly() -> None:
    for value in (0, 1, 0.1, 1e-5, 123.45, 1e12):
        assert float(number(value)) == float(value)


def test_no_filters_is_empty() -> None:
    assert filter_expression(None) == ""
    assert filter_expression(RecallFilters()) == ""


def test_every_filter_becomes_one_clause() -> None:
    filters = RecallFilters(
        categories=("shoes", "bags"),
        price_range=PriceRange(min=10, max=99.5, currency="EUR"),
        exclude_sellers=("S2", "S1"),
        exclude_listings=("L9",),
        max_mismatch=0.5,
    )
    assert filter_expression(filters) == (
        '(category in ["bags", "shoes"]) and (currency == "EUR") and (price >= 10.0) and '
        '(price <= 99.5) and (seller_id not in ["S1", "S2"]) and (listing_id not in ["L9"]) and '
        "(mismatch_score <= 0.5)"
    )


def test_open_price_bounds_only_constrain_currency() -> None:
    assert filter_expression(RecallFilters(price_range=PriceRange(currency="USD"))) == (
        '(currency == "USD")'
    )
    assert filter_expression(RecallFilters(price_range=PriceRange(max=5, currency="USD"))) == (
        '(currency == "USD") and (price <= 5.0)'
    )


def test_equal_filter_sets_give_equal_expressions() -> None:
    a = RecallFilters(categories=("b", "a", "a"), exclude_sellers=("x", "y"))
    b = RecallFilters(categories=("a", "b"), exclude_sellers=("y", "x", "y"))
    assert filter_expression(a) == filter_expression(b)


@given(
    st.lists(st.from_regex(r"\A[A-Za-z0-9_.:/-]{1,20}\Z"), min_size=1, max_size=5),
    st.lists(st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z"), max_size=5),
)
def test_expression_only_uses_known_fields(categories: list[str], sellers: list[str]) -> None:
    expression = filter_expression(
        RecallFilters(categories=tuple(categories), exclude_sellers=tuple(sellers))
    )
    without_literals = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    identifiers = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", without_literals))
    assert identifiers <= {"category", "seller_id", "in", "not", "and"}
