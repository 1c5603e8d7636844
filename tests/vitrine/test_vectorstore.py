"""The vector-store seam: consistency arguments, write tokens, index discovery."""

from __future__ import annotations

import pytest

from vitrine.settings import InfraSettings
from vitrine.vectorstore import (
    CollectionLayout,
    consistency,
    ensure_collection,
    index_type_of,
    open_client,
    upsert_rows,
)


def test_a_write_token_turns_into_a_customized_guarantee() -> None:
    assert consistency("Bounded", None) == {"consistency_level": "Bounded"}
    assert consistency("Bounded", 0) == {"consistency_level": "Bounded"}
    assert consistency("Strong", 123) == {
        "consistency_level": "Customized",
        "guarantee_timestamp": 123,
    }


def test_pymilvus_keeps_a_customized_guarantee_timestamp() -> None:
    # The assumption `consistency` rests on: pymilvus overwrites guarantee_timestamp for every
    # named level except Customized.
    from pymilvus.client import ts_utils

    kwargs = consistency("Bounded", 987654321)
    ts_utils.construct_guarantee_ts("c", kwargs)
    assert kwargs["guarantee_timestamp"] == 987654321


@pytest.mark.integration
def test_upsert_rows_returns_the_count_and_a_token_on_a_server(
    milvus: str, infra_settings: InfraSettings, unique_name: str
) -> None:
    client = open_client(milvus)
    try:
        ensure_collection(client, CollectionLayout(unique_name, 4, "FLAT"))
        assert index_type_of(client, unique_name) == "FLAT"
        row = {
            "listing_id": "a",
            "embedding": [1.0, 0.0, 0.0, 0.0],
            "mismatch_score": 0.0,
            "category": "c",
            "price": 1.0,
            "currency": "EUR",
            "seller_id": "s",
            "version": 1,
            "model_version": "m",
            "occurred_at_ms": 0,
            "updated_at_ms": 0,
        }
        count, token = upsert_rows(client, unique_name, [row])
        assert count == 1
        assert (token is None) == infra_settings.milvus_is_lite
        assert upsert_rows(client, unique_name, []) == (0, None)
    finally:
        client.drop_collection(unique_name)
        client.close()
