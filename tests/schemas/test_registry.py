"""The schema files load, are valid 2020-12, agree with each other and with limits.py."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas import (
    CONTRACTS,
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    limits,
    load_schema,
    validator_for,
)


@pytest.mark.parametrize("name", CONTRACTS)
def test_every_supported_version_has_a_valid_file(name: str) -> None:
    for version in SUPPORTED_VERSIONS[name]:
        schema = load_schema(name, version)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"urn:vitrine:schema:{name}:v{version}"


def test_load_schema_returns_a_copy() -> None:
    load_schema("listing_event")["properties"].clear()
    assert load_schema("listing_event")["properties"]


def test_unknown_contract_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown contract"):
        load_schema("listing_evnt")


def test_validators_are_compiled_once() -> None:
    assert validator_for("recall_request") is validator_for("recall_request")


@pytest.mark.parametrize("name", [n for n in CONTRACTS if n != "dead_letter_headers"])
def test_payload_schema_version_is_pinned(name: str) -> None:
    assert load_schema(name)["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def _no_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _no_descriptions(v) for k, v in node.items() if k != "description"}
    return node


def _defs(name: str) -> dict[str, Any]:
    return {key: _no_descriptions(node) for key, node in load_schema(name).get("$defs", {}).items()}


def test_shared_definitions_are_identical_across_files() -> None:
    # Each file is self-contained (no cross-file $ref for other languages' tooling to resolve),
    # so the shared definitions are copies: they must stay identical copies.
    seen: dict[str, tuple[str, Any]] = {}
    for name in CONTRACTS:
        for key, node in _defs(name).items():
            first = seen.setdefault(key, (name, node))
            assert node == first[1], f"$defs/{key} differs between {first[0]} and {name}"


def _at(name: str, pointer: str) -> Any:
    node: Any = load_schema(name)
    for part in pointer.strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


LE, EE, RQ, RP, DL = (
    "listing_event",
    "embedded_event",
    "recall_request",
    "recall_reply",
    "dead_letter_headers",
)


@pytest.mark.parametrize(
    ("value", "name", "pointer"),
    [
        (limits.LISTING_ID_PATTERN, LE, "$defs/listing_id/pattern"),
        (limits.SELLER_ID_PATTERN, LE, "$defs/seller_id/pattern"),
        (limits.CATEGORY_PATTERN, LE, "$defs/category/pattern"),
        (limits.TIMESTAMP_PATTERN, LE, "$defs/timestamp/pattern"),
        (limits.TIMESTAMP_PATTERN, DL, "properties/vitrine.dlq.failed_at/pattern"),
        (limits.CURRENCY_PATTERN, LE, "$defs/price/properties/currency/pattern"),
        (limits.MAX_PRICE, LE, "$defs/price/properties/amount/maximum"),
        (limits.EVENT_ID_PATTERN, LE, "properties/event_id/pattern"),
        (limits.MARKETPLACE_PATTERN, LE, "properties/marketplace/pattern"),
        (limits.MAX_VERSION, LE, "properties/version/maximum"),
        (limits.MAX_TITLE_CHARS, LE, "properties/title/maxLength"),
        (limits.MAX_IMAGE_URLS, LE, "properties/image_urls/maxItems"),
        (limits.MAX_URL_CHARS, LE, "properties/image_urls/items/maxLength"),
        (limits.IMAGE_URL_PATTERN, LE, "properties/image_urls/items/pattern"),
        (limits.MODEL_VERSION_PATTERN, EE, "$defs/model_version/pattern"),
        (limits.MAX_FRESHNESS_SECONDS, EE, "properties/freshness_seconds/maximum"),
        (limits.REQUEST_ID_PATTERN, RQ, "properties/request_id/pattern"),
        (limits.MAX_K, RQ, "properties/k/maximum"),
        (limits.MAX_VECTOR_DIM, RQ, "properties/query/properties/vector/maxItems"),
        (limits.MAX_QUERY_TEXT_CHARS, RQ, "properties/query/properties/text/maxLength"),
        (limits.BASE64_PATTERN, RQ, "properties/query/properties/image/pattern"),
        (limits.MAX_FILTER_CATEGORIES, RQ, "properties/filters/properties/categories/maxItems"),
        (limits.MAX_EXCLUDE_SELLERS, RQ, "properties/filters/properties/exclude_sellers/maxItems"),
        (
            limits.MAX_EXCLUDE_LISTINGS,
            RQ,
            "properties/filters/properties/exclude_listings/maxItems",
        ),
        (limits.MAX_REPLY_ITEMS, RP, "properties/items/maxItems"),
        (limits.MAX_MESSAGE_CHARS, RP, "properties/message/maxLength"),
        (limits.REASON_PATTERN, RP, "properties/reason/pattern"),
        (limits.MAX_MESSAGE_CHARS, DL, "properties/vitrine.dlq.message/maxLength"),
        (limits.MAX_FIELD_PATH_CHARS, DL, "properties/vitrine.dlq.field/maxLength"),
        (limits.TOPIC_PATTERN, DL, "properties/vitrine.dlq.topic/pattern"),
    ],
)
def test_limits_mirror_the_schema_files(value: Any, name: str, pointer: str) -> None:
    assert _at(name, pointer) == value


def test_header_digit_patterns_match_numeric_limits() -> None:
    partition = _at(DL, "properties/vitrine.dlq.partition/pattern")
    offset = _at(DL, "properties/vitrine.dlq.offset/pattern")
    assert partition == f"^(0|[1-9][0-9]{{0,{len(str(limits.MAX_PARTITION)) - 1}}})$"
    assert offset == f"^(0|[1-9][0-9]{{0,{len(str(limits.MAX_OFFSET)) - 1}}})$"
    assert set(str(limits.MAX_PARTITION)) == set(str(limits.MAX_OFFSET)) == {"9"}


_MUTANTS: list[Any] = [
    None,
    "",
    "x" * 600,
    -1,
    1.5,
    True,
    [],
    {},
    "L1\n",
    'a"b',
    "2026-02-30T00:00:00Z",
]


@pytest.mark.parametrize("name", CONTRACTS)
def test_inlined_references_give_the_same_verdicts_and_errors(name: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from schemas.registry import FORMAT_CHECKER, _ContractValidator, inline_local_refs

    from .strategies import payloads

    schema = load_schema(name)
    inlined = inline_local_refs(schema)
    assert "$ref" not in str({k: v for k, v in inlined.items() if k != "$defs"})
    referenced = _ContractValidator(schema, format_checker=FORMAT_CHECKER)
    compiled = validator_for(name)

    def errors(validator: Any, payload: Any) -> list[tuple[str, list[Any]]]:
        found = [(str(e.validator), list(e.absolute_path)) for e in validator.iter_errors(payload)]
        return sorted(found, key=repr)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payloads(name), st.data())
    def check(payload: dict[str, Any], data: st.DataObject) -> None:
        assert errors(compiled, payload) == errors(referenced, payload) == []
        # Break one field, top level or one level down, and compare what each reports.
        field = data.draw(st.sampled_from(sorted(payload)))
        target = payload
        if isinstance(payload[field], dict) and payload[field]:
            target = payload[field]
            field = data.draw(st.sampled_from(sorted(target)))
        target[field] = data.draw(st.sampled_from(_MUTANTS))
        assert errors(compiled, payload) == errors(referenced, payload)

    check()
