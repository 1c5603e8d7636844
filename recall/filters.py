"""Typed recall filters -> one Milvus boolean expression (pure).

Nothing from a request is pasted into an expression as text: every string becomes a
double-quoted literal with backslashes and quotes escaped, every number a finite float literal,
and field names come from this module only. The schema already restricts ids and categories to
safe charsets; the quoting here does not rely on that.

Milvus filter templating (``filter_params``) would be the better tool, but the milvus-lite 2.5.1
server fails every templated search ("Unexpected error in RPC handling"), and it rejects the
``not (...)`` form (``unsupported expr proto node``), so exclusions use ``not in``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from schemas import RecallFilters

from .errors import InvalidQuery


def quote(value: str) -> str:
    """A Milvus string literal equal to ``value``: double-quoted, ``\\`` and ``"`` escaped.

    Milvus reads no other escapes (``\\n``, ``\\u00e9`` stay literal), so control characters are
    refused rather than guessed at; any other Unicode is written as it is.
    """
    if not isinstance(value, str):
        raise InvalidQuery(f"filter value must be a string, got {type(value).__name__}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidQuery("filter strings must not contain control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def number(value: float) -> str:
    """A finite float literal (``repr`` of a float parses back exactly in Milvus)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidQuery(f"filter bound must be a number, got {type(value).__name__}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidQuery("filter bounds must be finite")
    return repr(as_float)


def string_list(values: Iterable[str]) -> str:
    """``["a", "b"]`` with every element quoted; sorted and de-duplicated so that equal filter
    sets give equal expressions (and batch together)."""
    return "[" + ", ".join(quote(v) for v in sorted(set(values))) + "]"


def filter_expression(filters: RecallFilters | None) -> str:
    """The Milvus expression for ``filters``; ``""`` when nothing is filtered."""
    if filters is None:
        return ""
    clauses: list[str] = []
    if filters.categories:
        clauses.append(f"category in {string_list(filters.categories)}")
    price = filters.price_range
    if price is not None:
        clauses.append(f"currency == {quote(price.currency)}")
        if price.min is not None:
            clauses.append(f"price >= {number(price.min)}")
        if price.max is not None:
            clauses.append(f"price <= {number(price.max)}")
    if filters.exclude_sellers:
        clauses.append(f"seller_id not in {string_list(filters.exclude_sellers)}")
    if filters.exclude_listings:
        clauses.append(f"listing_id not in {string_list(filters.exclude_listings)}")
    if filters.max_mismatch is not None:
        clauses.append(f"mismatch_score <= {number(filters.max_mismatch)}")
    return " and ".join(f"({clause})" for clause in clauses)
