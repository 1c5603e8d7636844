"""Answering batches against an exact in-memory index (no Kafka, no Milvus)."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta

import pytest

from recall.answer import Inbound, RecallAnswerer
from recall.filters import filter_expression
from recall.index import MilvusIndex, VectorIndex
from schemas import PriceRange, RecallFilters, RecallQuery, RecallRequest, RecallStatus, encode

from .conftest import Catalog, CatalogIndex, assert_same_ranking

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def request(**fields: object) -> bytes:
    fields.setdefault("request_id", "r1")
    fields.setdefault("k", 5)
    if "query" not in fields:
        fields["query"] = RecallQuery(listing_id="L00001")
    return encode(RecallRequest(**fields))  # type: ignore[arg-type]


def answer(index: CatalogIndex, *values: bytes | None) -> list:
    answerer = RecallAnswerer(index, max_search_vectors=64, clock=lambda: NOW)
    return answerer.answer([Inbound(v, 0.0) for v in values])


def test_fake_has_the_protocol_signatures() -> None:
    for name in ("lookup", "search"):
        protocol = inspect.signature(getattr(VectorIndex, name))
        assert inspect.signature(getattr(CatalogIndex, name)) == protocol
        assert inspect.signature(getattr(MilvusIndex, name)) == protocol


def test_listing_query_equals_exact_search_without_the_seed(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    [reply] = answer(index, request(k=7))
    assert reply.status is RecallStatus.OK and reply.request_id == "r1"
    assert reply.model_version == catalog.model_version
    seed = catalog.vectors[catalog.index_of("L00001")]
    want = catalog.exact(seed, 7, exclude="L00001")
    assert_same_ranking([(i.listing_id, i.score) for i in reply.items], want)
    assert all(i.listing_id != "L00001" for i in reply.items)
    first = reply.items[0]
    n = catalog.index_of(first.listing_id)
    assert first.category == catalog.category[n]
    assert first.price is not None and first.price.amount == catalog.price[n]


def test_vector_query_keeps_every_filter(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    filters = RecallFilters(
        categories=("shoes", "bags"),
        price_range=PriceRange(min=20, max=300, currency="EUR"),
        exclude_sellers=("S1", "S2"),
        exclude_listings=("L00010",),
        max_mismatch=0.5,
    )
    index.register(filters)
    vector = tuple(float(x) for x in catalog.vectors[3] + 0.1)
    [reply] = answer(index, request(query=RecallQuery(vector=vector), k=20, filters=filters))
    assert reply.status is RecallStatus.OK
    assert_same_ranking(
        [(i.listing_id, i.score) for i in reply.items], catalog.exact(vector, 20, filters)
    )


def test_compatible_requests_share_one_search(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    shoes = RecallFilters(categories=("shoes",))
    index.register(shoes)
    values = [
        request(request_id=f"r{i}", query=RecallQuery(listing_id=f"L{i:05d}"), k=3 + i)
        for i in range(5)
    ]
    values += [request(request_id="f1", filters=shoes), request(request_id="f2", filters=shoes)]
    replies = answer(index, *values)
    assert [r.request_id for r in replies] == ["r0", "r1", "r2", "r3", "r4", "f1", "f2"]
    assert [len(r.items) for r in replies] == [3, 4, 5, 6, 7, 5, 5]
    # Unfiltered: 5 vectors, limit k_max + 1 for the seed; "shoes": 2 vectors.
    assert sorted(index.searches) == sorted([(5, "", 8), (2, filter_expression(shoes), 6)])


def test_unknown_listing_is_not_found_without_a_search(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    [reply] = answer(index, request(query=RecallQuery(listing_id="nope")))
    assert (reply.status, reply.reason) == (RecallStatus.NOT_FOUND, "listing_not_indexed")
    assert index.searches == []


def test_past_deadline_is_expired_without_a_search(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    late, fine = NOW - timedelta(milliseconds=1), NOW + timedelta(seconds=5)
    replies = answer(
        index, request(request_id="a", deadline=late), request(request_id="b", deadline=fine)
    )
    assert [(r.request_id, r.status) for r in replies] == [
        ("a", RecallStatus.EXPIRED),
        ("b", RecallStatus.OK),
    ]
    assert replies[0].reason == "deadline_passed"
    assert [n for n, _, _ in index.searches] == [1]


@pytest.mark.parametrize(
    ("value", "reason", "request_id"),
    [
        (None, "malformed_json", None),
        (b"\xff", "malformed_json", None),
        (b"[1]", "not_an_object", None),
        (b'{"schema_version":1,"request_id":"x1","k":3}', "missing_field", "x1"),
        (
            b'{"schema_version":1,"request_id":"x2","k":3,"query":{"listing_id":"a\\" or 1==1"}}',
            "invalid_value",
            "x2",
        ),
        (
            json.dumps(
                {
                    "schema_version": 1,
                    "request_id": "x3",
                    "k": 3,
                    "query": {"listing_id": "L1"},
                    "filters": {"categories": ["line\nbreak"]},
                }
            ).encode(),
            None,
            "x3",
        ),
        (
            b'{"schema_version":1,"request_id":"x4","k":999,"query":{"listing_id":"L1"}}',
            None,
            "x4",
        ),
        (b'{"schema_version":1,"request_id":"bad id!","k":3}', None, None),
    ],
)
def test_bad_requests_are_invalid_with_a_reason(
    catalog: Catalog, value: bytes | None, reason: str | None, request_id: str | None
) -> None:
    index = CatalogIndex(catalog)
    [reply] = answer(index, value)
    assert reply.status is RecallStatus.INVALID
    assert reply.reason and (reason is None or reply.reason == reason), reply
    assert reply.request_id == request_id
    assert index.searches == []


def test_vector_of_the_wrong_dimension_or_zero_is_invalid(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    replies = answer(
        index,
        request(query=RecallQuery(vector=(1.0, 2.0))),
        request(query=RecallQuery(vector=(0.0,) * index.dim)),
    )
    assert [(r.status, r.reason) for r in replies] == [
        (RecallStatus.INVALID, "dimension_mismatch"),
        (RecallStatus.INVALID, "zero_vector"),
    ]


def test_a_failed_search_fails_only_its_own_requests(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    bags = RecallFilters(categories=("bags",))
    index.register(bags)
    index.fail_expression = filter_expression(bags)
    replies = answer(index, request(request_id="a", filters=bags), request(request_id="b"))
    assert [(r.request_id, r.status, r.reason) for r in replies] == [
        ("a", RecallStatus.ERROR, "milvus_search_failed"),
        ("b", RecallStatus.OK, None),
    ]


def test_a_failed_lookup_fails_listing_queries_only(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    index.fail_lookup = True
    vector = tuple(float(x) for x in catalog.vectors[0])
    replies = answer(
        index, request(request_id="a"), request(request_id="v", query=RecallQuery(vector=vector))
    )
    assert [(r.status, r.reason) for r in replies] == [
        (RecallStatus.ERROR, "milvus_lookup_failed"),
        (RecallStatus.OK, None),
    ]


def test_a_write_token_reaches_the_lookup_and_only_its_own_search(catalog: Catalog) -> None:
    index = CatalogIndex(catalog)
    replies = answer(
        index,
        request(request_id="plain"),
        request(request_id="ryw", query=RecallQuery(listing_id="L00002"), write_token=42),
    )
    assert [r.status for r in replies] == [RecallStatus.OK, RecallStatus.OK]
    assert index.tokens == [("lookup", 42), ("search", None), ("search", 42)]


def test_write_token_round_trips_and_is_optional() -> None:
    from schemas import decode_recall_request

    assert decode_recall_request(request(write_token=2**62)).write_token == 2**62
    assert decode_recall_request(request()).write_token is None
    payload = json.loads(request())
    for bad in (0, -1, "5", 2**63):
        payload["write_token"] = bad
        with pytest.raises(Exception, match="write_token"):
            decode_recall_request(json.dumps(payload).encode())


@pytest.mark.parametrize(
    "vector",
    [
        [0.5, -1, 2.0],
        [],
        [0.1] * 4097,
        [0.1, "x"],
        [0.1, True],
        [0.1, None],
        [1e308, 1e308 * 10],  # overflows to inf when parsed: the model refuses it
        "not a list",
    ],
)
def test_the_vector_fast_path_decides_like_the_full_decode(vector: object) -> None:
    from recall.answer import decode
    from schemas import ContractError, decode_recall_request

    payload = {"schema_version": 1, "request_id": "r1", "k": 3, "query": {"vector": vector}}
    raw = json.dumps(payload).encode()
    got, error, _ = decode(raw)
    try:
        want, want_error = decode_recall_request(raw), None
    except ContractError as exc:
        want, want_error = None, exc
    assert got == want
    assert (error is None) == (want_error is None)
    if error is not None and want_error is not None:
        assert (error.reason, error.field) == (want_error.reason, want_error.field)
