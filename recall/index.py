"""The vector index as the worker sees it: look up stored embeddings, search many vectors.

:class:`VectorIndex` is the seam: :class:`MilvusIndex` talks to Milvus (the local milvus-lite
server or a real one) through ``MilvusClient``; tests use an in-memory fake with the same
Protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from vitrine.vectorstore import (
    EMBEDDING_FIELD,
    IMAGE_VECTOR_FIELD,
    CollectionLayout,
    consistency,
    index_type_of,
    search_params,
    vector_dims,
)

from .errors import SearchFailed

log = logging.getLogger(__name__)

#: Row fields a reply reads; always named, never "*" (milvus-lite 2.5.1 wants output_fields).
HIT_FIELDS = ("listing_id", "mismatch_score", "category", "price", "currency", "model_version")


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result with the scalar fields a reply carries."""

    listing_id: str
    score: float
    mismatch_score: float | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    model_version: str | None = None


@dataclass(frozen=True, slots=True)
class StoredVector:
    """The embedding stored for a listing and the model that produced it."""

    vector: tuple[float, ...]
    model_version: str | None = None


class VectorIndex(Protocol):
    """What the recall worker needs from a vector store."""

    @property
    def dim(self) -> int:
        """Dimension of the stored embeddings."""
        ...

    @property
    def shared_dim(self) -> int | None:
        """Dimension of the stored cover vectors in the shared image-title space, if any."""
        ...

    def lookup(
        self, listing_ids: Sequence[str], *, write_token: int | None = None
    ) -> dict[str, StoredVector]:
        """Stored embeddings of the listings that exist; absent ids are left out. With a
        ``write_token`` the lookup sees that write."""
        ...

    def search(
        self,
        vectors: Sequence[Sequence[float]],
        expression: str,
        limit: int,
        *,
        write_token: int | None = None,
        field: str = EMBEDDING_FIELD,
    ) -> list[list[Hit]]:
        """For each vector, up to ``limit`` hits passing ``expression``, best first, compared
        with the vector ``field`` of the rows. With a ``write_token`` the search sees that
        write."""
        ...


class MilvusIndex:
    """:class:`VectorIndex` over the listings collection, at a fixed consistency level."""

    def __init__(
        self,
        client: Any,
        layout: CollectionLayout,
        *,
        consistency_level: str = "Bounded",
        timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        self._layout = layout
        self._consistency = consistency_level
        self._timeout = timeout_s

    @classmethod
    def open(
        cls,
        client: Any,
        collection: str,
        *,
        consistency_level: str = "Bounded",
        timeout_s: float = 5.0,
    ) -> MilvusIndex:
        """Read the collection's dimension and index, load it once, return the index over it."""
        try:
            described = client.describe_collection(collection)
            index_type = index_type_of(client, collection)
            client.load_collection(collection)
        except Exception as exc:
            raise SearchFailed(
                f"collection {collection!r} is not readable ({exc})",
                reason="collection_unavailable",
            ) from exc
        dims = vector_dims(described)
        if dims.get(EMBEDDING_FIELD, 0) <= 0:
            raise SearchFailed(
                f"collection {collection!r} has no embedding field", reason="collection_unavailable"
            )
        layout = CollectionLayout(
            collection, dims[EMBEDDING_FIELD], index_type, dims.get(IMAGE_VECTOR_FIELD)
        )
        return cls(client, layout, consistency_level=consistency_level, timeout_s=timeout_s)

    @property
    def dim(self) -> int:
        """Dimension of the stored embeddings."""
        return self._layout.dim

    @property
    def shared_dim(self) -> int | None:
        """Dimension of the stored cover vectors in the shared space (None: not stored)."""
        return self._layout.shared_dim

    @property
    def layout(self) -> CollectionLayout:
        """The collection searched."""
        return self._layout

    def lookup(
        self, listing_ids: Sequence[str], *, write_token: int | None = None
    ) -> dict[str, StoredVector]:
        """One query by primary key for all ``listing_ids``."""
        if not listing_ids:
            return {}
        try:
            rows = self._client.query(
                self._layout.name,
                ids=list(dict.fromkeys(listing_ids)),
                output_fields=["listing_id", "embedding", "model_version"],
                timeout=self._timeout,
                **consistency(self._consistency, write_token),
            )
        except Exception as exc:
            raise SearchFailed(f"lookup failed: {exc}", reason="milvus_lookup_failed") from exc
        found: dict[str, StoredVector] = {}
        for row in rows:
            found[str(row["listing_id"])] = StoredVector(
                tuple(float(x) for x in row["embedding"]), row.get("model_version") or None
            )
        return found

    def search(
        self,
        vectors: Sequence[Sequence[float]],
        expression: str,
        limit: int,
        *,
        write_token: int | None = None,
        field: str = EMBEDDING_FIELD,
    ) -> list[list[Hit]]:
        """One Milvus search call for all ``vectors``, against the rows' ``field``."""
        if not vectors:
            return []
        try:
            results = self._client.search(
                self._layout.name,
                data=[list(v) for v in vectors],
                anns_field=field,
                filter=expression,
                limit=limit,
                output_fields=list(HIT_FIELDS),
                search_params=search_params(self._layout, limit),
                timeout=self._timeout,
                **consistency(self._consistency, write_token),
            )
        except Exception as exc:
            raise SearchFailed(f"search failed: {exc}", reason="milvus_search_failed") from exc
        out: list[list[Hit]] = []
        for hits in results:
            row_hits = []
            for hit in hits:
                entity = hit.get("entity", {})
                row_hits.append(
                    Hit(
                        listing_id=str(hit.get("id", entity.get("listing_id"))),
                        score=float(hit["distance"]),
                        mismatch_score=entity.get("mismatch_score"),
                        category=entity.get("category"),
                        price=entity.get("price"),
                        currency=entity.get("currency"),
                        model_version=entity.get("model_version"),
                    )
                )
            out.append(row_hits)
        return out
