"""The Milvus collection of listing embeddings, shared by the embedder (writes) and the recall
worker (reads). Everything talks to Milvus through ``MilvusClient(uri=...)``, so the same code
runs against the local milvus-lite server, Milvus standalone and Milvus distributed.

Index choice: milvus-lite 2.5.1 accepts FLAT, IVF_FLAT and AUTOINDEX (exact in practice) and
rejects HNSW, so milvus-lite gets FLAT/COSINE, replaced by IVF_FLAT once the collection holds
LITE_ANN_MIN_ROWS rows (at start-up), and a Milvus server HNSW/COSINE, searched with
``ef`` = max(HNSW_EF, 2k).

Write tokens (read your writes): every upsert through :func:`upsert_rows` returns the Milvus
timestamp the server gave it. A search whose guarantee timestamp is at least that token sees
the write (Milvus waits until its query nodes have consumed up to it); other searches run at the
cheap Bounded level. milvus-lite gives no timestamps (token None): every write is visible to the
next read there anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from vitrine.errors import VitrineError
from vitrine.settings import VitrineSettings

#: Bytes the category column holds: schemas.limits.MAX_CATEGORY_BYTES (checked by a test).
CATEGORY_BYTES = 512

log = logging.getLogger(__name__)

#: Scalar fields stored next to each embedding; recall filters and replies read them.
SCALAR_FIELDS = (
    "mismatch_score",
    "category",
    "price",
    "currency",
    "seller_id",
    "version",
    "model_version",
    "occurred_at_ms",
    "updated_at_ms",
)
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
#: milvus-lite's ANN index once a collection is large enough for exact search to cost too
#: much (FLAT at 100k x 256-d: ~25 ms per search on 2 cores; IVF_FLAT with nlist 1024: ~3 ms,
#: recall@10 0.98 against exact search on clustered vectors — bench/bench_recall.py). Below
#: LITE_ANN_MIN_ROWS lite searches its growing segments exactly anyway.
LITE_ANN_MIN_ROWS = 50_000
IVF_PARAMS = {"nlist": 1024}
#: IVF search breadth. milvus-lite 2.5.1 answered the same at nprobe 16..256 (it seems to keep
#: its default); a Milvus server honours it.
IVF_NPROBE = 64
#: HNSW search breadth: recall@10 against exact search measured by bench/bench_recall.py.
HNSW_EF = 64
#: gRPC channel options of every client. pymilvus sends keepalive pings every 10 s, even on an
#: idle channel; a gRPC server with the default ping policy (milvus-lite's) allows one ping per
#: 5 minutes without calls and answers more with GOAWAY "too_many_pings", which fails the calls
#: on that connection, and pymilvus shares one connection per address in a process. Calls carry
#: their own timeouts, so idle channels need no pings.
GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 600_000,
    "grpc.keepalive_permit_without_calls": False,
}


class VectorStoreError(VitrineError):
    """Milvus refused or failed an operation; retried by callers that can wait."""

    reason = "milvus_error"


class CollectionMismatch(VectorStoreError):
    """The collection exists with a different embedding dimension than the model's."""

    reason = "collection_dimension_mismatch"


#: The item embedding (fusion output): "items like this listing".
EMBEDDING_FIELD = "embedding"
#: The cover photo in the model's shared image-title space: queries by photo and by text.
IMAGE_VECTOR_FIELD = "image_vector"


@dataclass(frozen=True)
class CollectionLayout:
    """Name, dimensions and index of the listings collection.

    ``shared_dim``: dimension of the cover vectors in the model's shared image-title space, or
    None for a collection without them (a model without that space, or a collection created
    before it existed).
    """

    name: str
    dim: int
    index_type: str  # "FLAT" on milvus-lite, "HNSW" on Milvus server
    shared_dim: int | None = None

    @classmethod
    def for_settings(
        cls, settings: VitrineSettings, dim: int, shared_dim: int | None = None
    ) -> CollectionLayout:
        """The layout for ``settings``: FLAT on the local milvus-lite server, HNSW otherwise."""
        index_type = "FLAT" if settings.milvus_is_lite else "HNSW"
        return cls(settings.milvus_collection, dim, index_type, shared_dim)


def vector_dims(described: dict[str, Any]) -> dict[str, int]:
    """``{field name: dimension}`` of the vector fields of a ``describe_collection`` answer."""
    dims: dict[str, int] = {}
    for field in described.get("fields", []):
        dim = field.get("params", {}).get("dim")
        if dim is not None:
            dims[str(field.get("name"))] = int(dim)
    return dims


def open_client(uri: str, token: str = "", timeout_s: float = 10.0) -> Any:
    """A ``MilvusClient`` for ``uri`` with Vitrine's gRPC keepalive options.

    pymilvus shares one gRPC channel per address and token within a process, configured by the
    first client that opens it; its default (a ping every 10 s even when idle) makes the Milvus
    gRPC server answer GOAWAY "too many pings" on idle connections. Every client in Vitrine,
    tests included, comes from here so the first one is always configured this way.
    """
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=timeout_s, grpc_options=dict(GRPC_OPTIONS))


def connect(settings: VitrineSettings, timeout_s: float = 10.0) -> Any:
    """A ``MilvusClient`` connected to the configured endpoint."""
    try:
        return open_client(settings.milvus_endpoint, settings.milvus_token, timeout_s)
    except Exception as exc:
        raise VectorStoreError(
            f"Milvus at {settings.milvus_endpoint} did not answer ({exc}); start it with "
            "`vitrine infra up` or fix VITRINE_MILVUS_URI"
        ) from exc


def ensure_collection(client: Any, layout: CollectionLayout) -> bool:
    """Create and load the collection if missing; return True when it was created.

    An existing collection with another dimension is an error, never silently recreated.
    """

    if client.has_collection(layout.name):
        dims = vector_dims(client.describe_collection(layout.name))
        for field, want in ((EMBEDDING_FIELD, layout.dim), (IMAGE_VECTOR_FIELD, layout.shared_dim)):
            have = dims.get(field)
            if have is not None and want is not None and have != want:
                raise CollectionMismatch(
                    f"collection {layout.name!r} holds {have}-d {field} vectors but the model "
                    f"produces {want}-d; use another VITRINE_MILVUS_COLLECTION"
                )
        # A start that died before (some of) the indexes: index what the collection has.
        missing = [f for f in dims if not client.list_indexes(layout.name, field_name=f)]
        if missing:
            _create_index(client, layout, missing)
        client.load_collection(layout.name)
        if layout.index_type == "FLAT":  # milvus-lite: an ANN index once large enough
            ensure_lite_ann_index(client, layout)
        return False
    try:
        return _create_collection(client, layout)
    except Exception as exc:
        # Milvus before 2.4 (e.g. the 2.3.5 standalone server of the `milvus` package) has one
        # vector field per collection: keep the item embeddings, drop the cover vectors (text
        # and photo queries then answer no_shared_space).
        if layout.shared_dim is None or "multiple vector fields" not in str(exc):
            raise
        log.warning(
            "Milvus at this endpoint stores one vector field per collection; %s is created "
            "without cover vectors, so text and photo queries cannot be answered from it",
            layout.name,
        )
        return _create_collection(client, replace(layout, shared_dim=None))


def _create_collection(client: Any, layout: CollectionLayout) -> bool:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("listing_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field(EMBEDDING_FIELD, DataType.FLOAT_VECTOR, dim=layout.dim)
    if layout.shared_dim is not None:
        schema.add_field(IMAGE_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=layout.shared_dim)
    schema.add_field("mismatch_score", DataType.FLOAT)
    # Milvus counts VARCHAR length in bytes: 128 characters of UTF-8 (schemas.limits).
    schema.add_field("category", DataType.VARCHAR, max_length=CATEGORY_BYTES)
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("currency", DataType.VARCHAR, max_length=3)
    schema.add_field("seller_id", DataType.VARCHAR, max_length=64)
    schema.add_field("version", DataType.INT64)
    schema.add_field("model_version", DataType.VARCHAR, max_length=64)
    schema.add_field("occurred_at_ms", DataType.INT64)
    schema.add_field("updated_at_ms", DataType.INT64)
    client.create_collection(layout.name, schema=schema, consistency_level="Strong")
    fields = [EMBEDDING_FIELD] + ([IMAGE_VECTOR_FIELD] if layout.shared_dim is not None else [])
    index_type = _create_index(client, layout, fields)
    client.load_collection(layout.name)
    log.info("created collection %s (%d-d, %s/COSINE)", layout.name, layout.dim, index_type)
    return True


def _create_index(client: Any, layout: CollectionLayout, fields: list[str]) -> str:
    """Index the vector ``fields`` (a collection loads only once all are indexed); returns
    the index type used.

    HNSW falls back to FLAT on a milvus-lite server reached through an explicit URI (it
    accepts only FLAT, IVF_FLAT and AUTOINDEX).
    """
    index_type = layout.index_type
    while True:
        index = client.prepare_index_params()
        params = HNSW_PARAMS if index_type == "HNSW" else {}
        for field in fields:
            index.add_index(field, index_type=index_type, metric_type="COSINE", params=params)
        try:
            client.create_index(layout.name, index)
            return index_type
        except Exception as exc:
            if index_type != "HNSW" or "local mode" not in str(exc):
                raise
            index_type = "FLAT"


def search_params(layout: CollectionLayout, k: int) -> dict[str, Any]:
    """Search parameters that keep HNSW recall high for ``k`` results (pure)."""
    if layout.index_type == "HNSW":
        return {"metric_type": "COSINE", "params": {"ef": max(HNSW_EF, 2 * k)}}
    if layout.index_type == "IVF_FLAT":
        return {"metric_type": "COSINE", "params": {"nprobe": IVF_NPROBE}}
    return {"metric_type": "COSINE", "params": {}}


def ensure_lite_ann_index(client: Any, layout: CollectionLayout) -> str:
    """On milvus-lite, swap a FLAT index for IVF_FLAT once the collection holds at least
    LITE_ANN_MIN_ROWS rows; return the index type now in place.

    milvus-lite changes an index only on a released collection: searches fail for the few
    seconds of the swap (4 s at 100k rows), which callers retry. Run it at start-up.
    """
    current = index_type_of(client, layout.name)
    if current != "FLAT":
        return current
    rows = client.query(layout.name, filter="", output_fields=["count(*)"])
    if int(rows[0]["count(*)"]) < LITE_ANN_MIN_ROWS:
        return current
    client.flush(layout.name)
    client.release_collection(layout.name)
    client.drop_index(layout.name, "embedding")
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="IVF_FLAT", metric_type="COSINE", params=IVF_PARAMS)
    client.create_index(layout.name, index)
    client.load_collection(layout.name)
    log.info("collection %s: FLAT index replaced by IVF_FLAT %s", layout.name, IVF_PARAMS)
    return "IVF_FLAT"


def index_type_of(client: Any, collection: str) -> str:
    """The index type of the collection's embedding field ("FLAT" when it has none)."""
    for name in client.list_indexes(collection) or ():
        described = client.describe_index(collection, name)
        if described.get("field_name", name) == "embedding":
            return str(described.get("index_type", "FLAT")).upper()
    return "FLAT"


def consistency(level: str, write_token: int | None) -> dict[str, Any]:
    """Keyword arguments of a pymilvus read at ``level``, or one that sees ``write_token``.

    pymilvus replaces the guarantee timestamp for every named level but "Customized", and the
    server keeps a Customized one as given (pure).
    """
    if write_token:
        return {"consistency_level": "Customized", "guarantee_timestamp": int(write_token)}
    return {"consistency_level": level}


def write_rows(
    client: Any, collection: str, rows: list[dict[str, Any]], *, insert_absent: bool
) -> tuple[int, int | None]:
    """Write ``rows`` (one per listing id); return (rows written, write token or None).

    ``insert_absent`` (milvus-lite): rows whose id the collection does not hold yet are
    inserted, only the others upserted. milvus-lite runs an upsert as a delete that scans the
    whole collection (~0.2 s per call and 0.2 s of its CPU at 100k rows, whatever the number
    of rows), an id query costs ~4 ms there. Only for a collection with one writer per listing
    (the embedder's partitions, while no rollout job feeds the same collection): the query
    and the insert are not one atomic step, and an insert racing another writer's upsert of
    the same id leaves two rows with it.
    """
    if not rows:
        return 0, None
    if insert_absent:
        ids = [str(row["listing_id"]) for row in rows]
        try:
            held = client.query(collection, ids=ids, output_fields=["listing_id"])
        except Exception as exc:
            raise VectorStoreError(f"query of {collection} failed: {exc}") from exc
        present = {str(row["listing_id"]) for row in held}
        absent = [row for row in rows if str(row["listing_id"]) not in present]
        if absent:
            try:
                client.insert(collection, absent)
            except Exception as exc:
                raise VectorStoreError(f"insert into {collection} failed: {exc}") from exc
        rows = [row for row in rows if str(row["listing_id"]) in present]
        if not rows:
            return len(absent), None
        written, token = upsert_rows(client, collection, rows)
        return written + len(absent), token
    return upsert_rows(client, collection, rows)


def upsert_rows(
    client: Any, collection: str, rows: list[dict[str, Any]], timeout_s: float | None = None
) -> tuple[int, int | None]:
    """Upsert ``rows``; return (rows upserted, write token or None when the store gives none).

    ``MilvusClient.upsert`` drops the timestamp of the mutation result, so this calls the
    connection handler the client wraps (pinned by tests/vitrine/test_vectorstore.py).
    """
    if not rows:
        return 0, None
    try:
        result = client._get_connection().upsert_rows(collection, rows, timeout=timeout_s)
    except Exception as exc:
        raise VectorStoreError(f"upsert into {collection} failed: {exc}") from exc
    token = int(getattr(result, "timestamp", 0) or 0)
    return int(result.upsert_count), token or None
