"""The compiled accept-check never accepts what the schema rejects, and decoding a recall reply
through it decides exactly as the full schema path does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import ContractError, RecallReply, decode, decode_recall_reply, load_schema
from schemas.fastcheck import compile_check
from schemas.registry import RECALL_REPLY, validator_for

from .strategies import categories, listing_ids, payloads

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCHEMA = load_schema(RECALL_REPLY)
_ITEMS = compile_check(_SCHEMA["properties"]["items"], _SCHEMA)

# Values of every JSON type, near every bound the item rule has.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 1.5, -0.5, 1e12, 1e12 + 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from(["L1\n", "a b", "", "x" * 65, "EUR", "eur", "EURO", "\u0085cat", " x"]),
    listing_ids,
    categories,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_item_keys = st.sampled_from(
    ["listing_id", "score", "mismatch_score", "category", "price", "other"]
)
_prices = st.fixed_dictionaries(
    {}, optional={"amount": _values | _scalars, "currency": _scalars, "x": _scalars}
)
_items = st.dictionaries(_item_keys, _scalars | _prices | _values, max_size=6)
_item_lists = st.lists(_items, max_size=4) | st.lists(_scalars, max_size=2) | _values


def test_the_reply_items_rule_compiles() -> None:
    # The day the schema grows a keyword the check does not know, replies fall back to the
    # full validator (correct, slower): this test says so.
    assert _ITEMS is not None


def test_items_are_only_read_where_the_decode_stands_them_in() -> None:
    # decode_recall_reply validates everything but the items with "items": [] in their place;
    # that is sound only while no other rule of the schema looks into the items.
    outside = {k: v for k, v in _SCHEMA.items() if k not in ("properties", "$defs")}
    others = {k: v for k, v in _SCHEMA["properties"].items() if k != "items"}
    text = json.dumps([outside, others])
    assert '"items"' not in text.replace('"required": ["request_id", "items", "model_version"]', "")


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": ["a"]},
        {"type": ["string", "null"]},
        {"$ref": "https://example.com/x"},
        {"$ref": "#/$defs/missing"},
        {"properties": {"a": {"const": 1}}},
        {"items": {"minimum": 0, "exclusiveMaximum": 1}},
    ],
)
def test_unknown_keywords_are_not_compiled(schema: dict[str, Any]) -> None:
    assert compile_check(schema, {"$defs": {}}) is None


@FAST
@given(_item_lists)
def test_accepted_items_satisfy_the_schema(items: Any) -> None:
    assert _ITEMS is not None
    if _ITEMS(items):
        payload = {"schema_version": 1, "status": "error", "reason": "x", "took_seconds": 0}
        validator_for(RECALL_REPLY).validate({**payload, "items": items})


def _outcome(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode(data, RecallReply)
    except ContractError as exc:
        return "error", (exc.reason, exc.field)


def _fast_outcome(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode_recall_reply(data)
    except ContractError as exc:
        return "error", (exc.reason, exc.field)


@FAST
@given(payloads(RECALL_REPLY), _item_lists)
def test_reply_decode_decides_as_the_schema(payload: dict[str, Any], items: Any) -> None:
    for candidate in (payload, {**payload, "items": items}):
        data = json.dumps(candidate).encode()
        assert _fast_outcome(data) == _outcome(data)


_OK = {
    "schema_version": 1,
    "request_id": "r1",
    "status": "ok",
    "model_version": "m.1",
    "took_seconds": 0.01,
}
_ITEM = {"listing_id": "L1", "score": 0.5, "category": "shoes"}


@pytest.mark.parametrize(
    "items",
    [
        [_ITEM],
        [{**_ITEM, "listing_id": "L1\n"}],
        [{**_ITEM, "score": True}],
        [{**_ITEM, "score": "0.5"}],
        [{**_ITEM, "mismatch_score": 1.5}],
        [{**_ITEM, "category": "a\u0085b"}],
        [{**_ITEM, "category": "x" * 129}],
        [{**_ITEM, "price": {"amount": -1, "currency": "EUR"}}],
        [{**_ITEM, "price": {"amount": 1, "currency": "eur"}}],
        [{**_ITEM, "price": {"amount": 1}}],
        [{"score": 0.5}],
        [_ITEM] * 201,
        "L1",
    ],
)
def test_hostile_reply_items_are_decided_as_before(items: Any) -> None:
    data = json.dumps({**_OK, "items": items}).encode()
    assert _fast_outcome(data) == _outcome(data)
