"""The Milvus sink's reads: how fresh they ask Milvus to be."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.executor import BlockingRunner
from streams.sink import MilvusSink
from vitrine.vectorstore import CollectionLayout


class QueryRecorder:
    """A MilvusClient stand-in that keeps each query's keyword arguments."""

    def __init__(self) -> None:
        self.queries: list[dict[str, Any]] = []

    def query(self, collection: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.queries.append({"collection": collection, **kwargs})
        return [{"listing_id": listing_id} for listing_id in kwargs["ids"]]


def sink(client: QueryRecorder, runner: BlockingRunner) -> MilvusSink:
    layout = CollectionLayout(name="listings", dim=8, index_type="FLAT")
    return MilvusSink(lambda: client, layout, runner, backoff_s=0.01, backoff_max_s=0.01)


def test_a_read_with_the_rows_write_token_waits_only_for_that_write() -> None:
    client, runner = QueryRecorder(), BlockingRunner(1)
    try:
        rows = asyncio.run(sink(client, runner).fetch_rows(["a", "b"], write_token=4242))
    finally:
        runner.close()
    assert set(rows) == {"a", "b"}
    (query,) = client.queries
    assert query["consistency_level"] == "Customized"
    assert query["guarantee_timestamp"] == 4242


def test_a_read_without_a_token_is_strong() -> None:
    client, runner = QueryRecorder(), BlockingRunner(1)
    try:
        asyncio.run(sink(client, runner).fetch_rows(["a"]))
        assert asyncio.run(sink(client, runner).fetch_rows([])) == {}
    finally:
        runner.close()
    (query,) = client.queries  # no query at all for no ids
    assert query["consistency_level"] == "Strong"
    assert "guarantee_timestamp" not in query
