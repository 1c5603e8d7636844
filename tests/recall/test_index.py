"""recall.index: the quick search path reads the same hits as pymilvus, and falls back to it."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from pymilvus.client.search_result import SearchResult
from pymilvus.grpc_gen import schema_pb2

from recall.errors import SearchFailed
from recall.filters import filter_expression
from recall.index import HIT_FIELDS, Hit, MilvusIndex, QuickSearch, hits_of, read_hits
from schemas import RecallFilters
from vitrine.vectorstore import CollectionLayout, open_client

from .conftest import DIM, Catalog, RecallEnv

# -- a reply as Milvus sends it ------------------------------------------------------------------


def _column(name: str, kind: int, slot: str, values: list[Any]) -> schema_pb2.FieldData:
    column = schema_pb2.FieldData(field_name=name, type=kind)
    getattr(column.scalars, slot).data.extend(values)
    return column


def _reply(topks: list[int], *, nullable: bool = False) -> schema_pb2.SearchResultData:
    n = sum(topks)
    result = schema_pb2.SearchResultData(num_queries=len(topks), top_k=max(topks))
    result.topks.extend(topks)
    result.scores.extend([1.0 - i / 8 for i in range(n)])
    result.ids.str_id.data.extend([f"L{i}" for i in range(n)])
    result.output_fields.extend(HIT_FIELDS)
    mismatch = _column("mismatch_score", schema_pb2.Float, "float_data", [i / 4 for i in range(n)])
    if nullable:
        mismatch.valid_data.extend([True] * n)
    result.fields_data.extend(
        [
            mismatch,
            _column("category", schema_pb2.VarChar, "string_data", [f"c{i}" for i in range(n)]),
            _column("price", schema_pb2.Double, "double_data", [10.5 + i for i in range(n)]),
            _column("currency", schema_pb2.VarChar, "string_data", ["EUR"] * n),
            _column("model_version", schema_pb2.VarChar, "string_data", ["m.1"] * n),
        ]
    )
    return result


def test_read_hits_matches_pymilvus_on_the_same_reply() -> None:
    reply = _reply([3, 0, 2])
    ours = read_hits(reply)
    assert ours == hits_of(SearchResult(reply))
    assert [len(q) for q in ours] == [3, 0, 2]
    assert ours[2][1] == Hit("L4", 0.5, 1.0, "c4", 14.5, "EUR", "m.1")


def test_read_hits_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="nullable"):
        read_hits(_reply([1], nullable=True))
    short = _reply([1])
    del short.fields_data[-1]
    with pytest.raises(ValueError, match="model_version"):
        read_hits(short)


# -- falling back ------------------------------------------------------------------------------


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class _Stub:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls = 0

    def Search(self, request: Any, timeout: float) -> Any:  # gRPC names it so
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class _Handler:
    server_address = "fake:19530"

    def __init__(self, stub: _Stub) -> None:
        self._stub = stub


class _Client:
    """What MilvusIndex uses of MilvusClient: the connection and the public search."""

    def __init__(self, outcome: Any) -> None:
        self.stub = _Stub(outcome)
        self.searches = 0

    def _get_connection(self) -> _Handler:
        return _Handler(self.stub)

    def search(self, collection: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self.searches += 1
        return [[{"id": "P1", "distance": 0.9, "entity": {"category": "shoes"}}]]


def _index(outcome: Any) -> tuple[MilvusIndex, _Client]:
    client = _Client(outcome)
    return MilvusIndex(client, CollectionLayout("c", 4, "HNSW")), client


class _Response:
    def __init__(self, results: schema_pb2.SearchResultData, code: int = 0) -> None:
        from pymilvus.grpc_gen import common_pb2

        self.status = common_pb2.Status(code=code, reason="refused" if code else "")
        self.results = results


def test_the_quick_path_answers_when_the_stub_does() -> None:
    index, client = _index(_Response(_reply([2])))
    [hits] = index.search([[0.0, 0.0, 0.0, 1.0]], "", 2)
    assert [h.listing_id for h in hits] == ["L0", "L1"]
    assert (client.stub.calls, client.searches) == (1, 0)


def test_an_rpc_error_goes_to_pymilvus_and_the_quick_path_stays() -> None:
    index, client = _index(_RpcError(grpc.StatusCode.UNAVAILABLE))
    for expected in (1, 2):
        [hits] = index.search([[0.0, 0.0, 0.0, 1.0]], "", 2)
        assert [h.listing_id for h in hits] == ["P1"]
        assert (client.stub.calls, client.searches) == (expected, expected)


def test_a_server_error_goes_to_pymilvus_and_the_quick_path_stays() -> None:
    index, client = _index(_Response(_reply([2]), code=65535))
    for expected in (1, 2):
        [hits] = index.search([[0.0, 0.0, 0.0, 1.0]], "", 2)
        assert [h.listing_id for h in hits] == ["P1"]
        assert (client.stub.calls, client.searches) == (expected, expected)


def test_a_timeout_is_final() -> None:
    index, client = _index(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    with pytest.raises(SearchFailed) as failed:
        index.search([[0.0, 0.0, 0.0, 1.0]], "", 2)
    assert failed.value.reason == "milvus_search_failed"
    assert client.searches == 0


def test_a_reply_it_cannot_read_turns_the_quick_path_off() -> None:
    index, client = _index(_Response(_reply([1], nullable=True)))
    for _ in range(2):
        [hits] = index.search([[0.0, 0.0, 0.0, 1.0]], "", 2)
        assert [h.listing_id for h in hits] == ["P1"]
    assert (client.stub.calls, client.searches) == (1, 2)


def test_no_quick_path_without_pymilvus_internals() -> None:
    assert QuickSearch.create(object()) is None


# -- against the session's Milvus ---------------------------------------------------------------


@pytest.mark.integration
def test_quick_and_pymilvus_searches_agree(recall_env: RecallEnv, catalog: Catalog) -> None:
    """Exact (FLAT) searches on either Milvus kind: the same hits, filtered or not, one query
    vector or several, at the worker's consistency and with a write token."""
    from vitrine.vectorstore import upsert_rows

    settings = recall_env.settings
    client = open_client(settings.milvus_endpoint, settings.milvus_token)
    name = f"t_{uuid.uuid4().hex[:10]}_quick"
    try:
        from vitrine.vectorstore import ensure_collection

        layout = CollectionLayout(name, DIM, "FLAT")
        ensure_collection(client, layout)
        _count, token = upsert_rows(client, name, catalog.rows())
        quick = MilvusIndex(client, layout, consistency_level=settings.recall_consistency_level)
        plain = MilvusIndex(
            client, layout, consistency_level=settings.recall_consistency_level, quick=False
        )
        assert quick._quick is not None
        queries = [catalog.vectors[i].tolist() for i in (0, 7, 19)]
        only = filter_expression(RecallFilters(categories=("shoes", "bags")))
        for expression in ("", only):
            for vectors in (queries[:1], queries):
                got = quick.search(vectors, expression, 10, write_token=token)
                assert got == plain.search(vectors, expression, 10, write_token=token)
                assert all(len(hits) == 10 for hits in got)
        [hits] = quick.search(queries[:1], "", 1, write_token=token)
        row = catalog.rows()[0]
        assert hits[0].listing_id == row["listing_id"]
        assert (hits[0].category, hits[0].price, hits[0].currency) == (
            row["category"],
            row["price"],
            row["currency"],
        )
        assert quick._quick is not None  # never turned off on a real reply
    finally:
        client.drop_collection(name)
        client.close()
