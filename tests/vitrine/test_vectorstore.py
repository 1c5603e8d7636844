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
    write_rows,
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


@pytest.mark.parametrize("insert_absent", [True, False])
def test_write_rows_inserts_new_ids_and_replaces_held_ones(
    milvus: str, unique_name: str, insert_absent: bool
) -> None:
    client = open_client(milvus)

    def row(listing: str, version: int) -> dict:
        return {
            "listing_id": listing,
            "embedding": [1.0, float(version), 0.0, 0.0],
            "mismatch_score": 0.0,
            "category": "c",
            "price": float(version),
            "currency": "EUR",
            "seller_id": "s",
            "version": version,
            "model_version": "m",
            "occurred_at_ms": 0,
            "updated_at_ms": 0,
        }

    try:
        ensure_collection(client, CollectionLayout(unique_name, 4, "FLAT"))
        assert write_rows(client, unique_name, [row("a", 1)], insert_absent=insert_absent)[0] == 1
        rows = [row("a", 2), row("b", 1), row("c", 1)]  # one held, two new
        assert write_rows(client, unique_name, rows, insert_absent=insert_absent)[0] == 3
        assert write_rows(client, unique_name, [], insert_absent=insert_absent) == (0, None)
        stored = client.query(unique_name, filter="version >= 0", output_fields=["version"])
        by_id: dict[str, list[int]] = {}
        for item in stored:
            by_id.setdefault(item["listing_id"], []).append(item["version"])
        assert by_id == {"a": [2], "b": [1], "c": [1]}  # one row per id, the newest
    finally:
        client.drop_collection(unique_name)
        client.close()


class _LiteClient:
    """Records the calls ensure_lite_ann_index makes (a fake of the MilvusClient methods)."""

    def __init__(self, index_type: str, rows: int) -> None:
        self.index_type, self.rows, self.calls = index_type, rows, []

    def list_indexes(self, name):
        return ["embedding"]

    def describe_index(self, name, index):
        return {"field_name": "embedding", "index_type": self.index_type}

    def query(self, name, filter, output_fields):
        return [{"count(*)": self.rows}]

    def prepare_index_params(self):
        from pymilvus import MilvusClient

        return MilvusClient.prepare_index_params()

    def __getattr__(self, method):
        return lambda *args, **kwargs: self.calls.append((method, args, kwargs))


@pytest.mark.parametrize(
    ("index_type", "rows", "want", "swapped"),
    [
        ("FLAT", 49_999, "FLAT", False),
        ("FLAT", 50_000, "IVF_FLAT", True),
        ("HNSW", 10**6, "HNSW", False),
    ],
)
def test_lite_gets_an_ann_index_once_large(
    index_type: str, rows: int, want: str, swapped: bool
) -> None:
    from vitrine.vectorstore import ensure_lite_ann_index

    client = _LiteClient(index_type, rows)
    assert ensure_lite_ann_index(client, CollectionLayout("c", 4, "FLAT")) == want
    methods = [m for m, _, _ in client.calls]
    if swapped:
        assert methods == [
            "flush",
            "release_collection",
            "drop_index",
            "create_index",
            "load_collection",
        ]
        index = client.calls[3][1][1]
        [params] = [p for p in index]
        assert params.index_type == "IVF_FLAT"
        assert "nlist" in str(vars(params))  # pymilvus keeps the build params privately
    else:
        assert methods == []


@pytest.mark.integration
def test_cover_vectors_are_stored_indexed_and_checked(
    milvus: str, infra_settings: InfraSettings, unique_name: str
) -> None:
    from vitrine.vectorstore import IMAGE_VECTOR_FIELD, CollectionMismatch, vector_dims

    client = open_client(milvus)
    layout = CollectionLayout(unique_name, 4, "FLAT", shared_dim=3)
    try:
        assert ensure_collection(client, layout)
        dims = vector_dims(client.describe_collection(unique_name))
        if not infra_settings.milvus_is_lite and dims == {"embedding": 4}:
            # Milvus before 2.4 (the local 2.3.5 server) holds one vector field: the
            # collection is made without cover vectors rather than not at all.
            assert not ensure_collection(client, layout)
            return
        assert dims == {"embedding": 4, IMAGE_VECTOR_FIELD: 3}
        # A start that died between the two indexes: the missing one is created again.
        client.release_collection(unique_name)
        [index_name] = client.list_indexes(unique_name, field_name=IMAGE_VECTOR_FIELD)
        client.drop_index(unique_name, index_name)
        assert not ensure_collection(client, layout)
        assert client.list_indexes(unique_name, field_name=IMAGE_VECTOR_FIELD)
        # An older model's layout (no shared space) opens it; another shared size does not.
        assert not ensure_collection(client, CollectionLayout(unique_name, 4, "FLAT"))
        with pytest.raises(CollectionMismatch):
            ensure_collection(client, CollectionLayout(unique_name, 4, "FLAT", shared_dim=5))
    finally:
        client.drop_collection(unique_name)
        client.close()
