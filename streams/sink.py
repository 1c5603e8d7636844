"""The Milvus sink: de-duplicated upserts and deletes, retried until Milvus answers.

While Milvus fails the sink keeps retrying with capped exponential backoff, so the pipeline
(and, through its bounded queues, the Kafka consumer) pauses: good events are never dropped or
dead-lettered because the vector store is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from streams import metrics
from streams.errors import WriteAbandoned
from streams.executor import BlockingRunner
from vitrine.vectorstore import (
    IMAGE_VECTOR_FIELD,
    SCALAR_FIELDS,
    CollectionLayout,
    CollectionMismatch,
    VectorStoreError,
    connect,
    consistency,
    ensure_collection,
    vector_dims,
    write_rows,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ROW_FIELDS = ("listing_id", "embedding", *SCALAR_FIELDS)


@dataclass(frozen=True)
class Mutation:
    """One row to write (``row`` set) or remove (``row`` None), at a listing version."""

    listing_id: str
    version: int
    row: dict[str, Any] | None


def newest_per_listing(mutations: Iterable[Mutation]) -> list[Mutation]:
    """Keep one mutation per listing, the newest version (pure).

    Milvus keeps both rows when one upsert batch repeats a primary key, so this runs on every
    batch before it is written.
    """
    newest: dict[str, Mutation] = {}
    for mutation in mutations:
        kept = newest.get(mutation.listing_id)
        if kept is None or mutation.version >= kept.version:
            newest[mutation.listing_id] = mutation
    return list(newest.values())


def write_token(result: Any) -> int | None:
    """The Milvus timestamp of a delete, when the client's result carries one.

    pymilvus 2.6 ``MilvusClient.delete`` returns counts, cost and ids but not the mutation
    timestamp, so deletes carry no token today; upserts go through
    :func:`vitrine.vectorstore.upsert_rows`, which returns it (a Milvus server gives one,
    milvus-lite none).
    """
    token = result.get("timestamp") if isinstance(result, dict) else None
    return token if isinstance(token, int) and not isinstance(token, bool) and token >= 0 else None


class VectorSink(Protocol):
    """What the pipeline needs from the vector store."""

    async def write(
        self, mutations: Sequence[Mutation], give_up: Callable[[], bool] | None = None
    ) -> dict[str, int]:
        """Apply the mutations; returns only once they are durable, with the write token
        (Milvus timestamp) of each listing when the client reports one. After a failed try,
        raises :class:`~streams.errors.WriteAbandoned` instead of retrying when ``give_up()``."""

    async def fetch_rows(
        self, listing_ids: Sequence[str], write_token: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Current rows (all fields) of these listings, as of ``write_token`` at least (the
        newest write of theirs), else as of now."""


class MilvusSink:
    """Writes listing rows through ``MilvusClient`` on the blocking runner."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        layout: CollectionLayout,
        runner: BlockingRunner,
        backoff_s: float,
        backoff_max_s: float,
        *,
        sole_writer: bool = True,
    ) -> None:
        self._factory = client_factory
        self._layout = layout
        self._runner = runner
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._client: Any = None
        self.stopping = False
        #: Whether the collection has the cover-vector field (known after :meth:`open`).
        self.stores_covers = layout.shared_dim is not None
        #: New listings are inserted, not upserted (milvus-lite: see ``write_rows``) — only
        #: while nothing else writes the collection: a query-then-insert racing another
        #: writer's upsert of the same listing would leave two rows with its id.
        self.insert_absent = layout.index_type == "FLAT" and sole_writer

    @classmethod
    def for_settings(
        cls,
        settings: Any,
        dim: int,
        runner: BlockingRunner,
        shared_dim: int | None = None,
        *,
        sole_writer: bool = True,
    ) -> MilvusSink:
        """A sink on the configured Milvus and collection; ``shared_dim``: the model's shared
        image-title space, whose cover vectors a new collection stores too; ``sole_writer``:
        whether the embedder's replicas are the collection's only writers (not so while a
        rollout job still feeds the candidate they write)."""
        return cls(
            lambda: connect(settings),
            CollectionLayout.for_settings(settings, dim, shared_dim),
            runner,
            settings.milvus_backoff_s,
            settings.milvus_backoff_max_s,
            sole_writer=sole_writer,
        )

    async def open(self) -> None:
        """Connect and create or load the collection (retried like every call).

        A collection created before the model had a shared space keeps working without cover
        vectors (text and photo queries then answer ``no_shared_space``); a collection that
        stores them cannot take rows of a model without one.
        """
        await self._retry("open", lambda client: ensure_collection(client, self._layout))
        name = self._layout.name
        described = await self._retry("describe", lambda c: c.describe_collection(name))
        stored = vector_dims(described).get(IMAGE_VECTOR_FIELD)
        if stored is not None and self._layout.shared_dim is None:
            raise CollectionMismatch(
                f"collection {self._layout.name!r} stores cover vectors in a shared image-title "
                "space but the model has none; use another VITRINE_MILVUS_COLLECTION"
            )
        if stored is None and self._layout.shared_dim is not None:
            log.warning(
                "collection %s has no %s field (created by an older model): cover vectors are "
                "not stored and text and photo queries cannot be answered from it",
                self._layout.name,
                IMAGE_VECTOR_FIELD,
            )
        self.stores_covers = stored is not None

    def _connected(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def _retry(
        self, op: str, call: Callable[[Any], T], give_up: Callable[[], bool] | None = None
    ) -> T:
        delay = self._backoff
        while True:
            try:
                return await self._runner.run(lambda: call(self._connected()))
            except VectorStoreError as exc:
                if exc.reason == "collection_dimension_mismatch":
                    raise
                error: Exception = exc
            except Exception as exc:  # pymilvus raises MilvusException, grpc and OS errors
                error = exc
            if self.stopping:
                raise WriteAbandoned(f"Milvus {op} abandoned at shutdown: {error}")
            if give_up is not None and give_up():
                raise WriteAbandoned(f"Milvus {op} abandoned, partitions revoked: {error}")
            metrics.MILVUS_RETRIES.labels(op=op).inc()
            log.warning("Milvus %s failed (%s); retrying in %.1fs", op, error, delay)
            self._client = None  # reconnect: the server may have restarted
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def write(
        self, mutations: Sequence[Mutation], give_up: Callable[[], bool] | None = None
    ) -> dict[str, int]:
        """Delete removed listings and upsert the rest, one call each; their write tokens."""
        unique = newest_per_listing(mutations)
        deletes = [m.listing_id for m in unique if m.row is None]
        rows = [m.row for m in unique if m.row is not None]
        if not self.stores_covers:
            rows = [{k: v for k, v in row.items() if k != IMAGE_VECTOR_FIELD} for row in rows]
        name = self._layout.name
        started = time.perf_counter()
        tokens: dict[str, int | None] = {}
        if deletes:
            result = await self._retry("delete", lambda c: c.delete(name, ids=deletes), give_up)
            tokens.update(dict.fromkeys(deletes, write_token(result)))
        if rows:
            upserted = await self._retry(
                "upsert",
                lambda c: write_rows(c, name, rows, insert_absent=self.insert_absent),
                give_up,
            )
            tokens.update(dict.fromkeys((str(r["listing_id"]) for r in rows), upserted[1]))
        metrics.STAGE_DURATION.labels(stage="upsert").observe(time.perf_counter() - started)
        return {listing: token for listing, token in tokens.items() if token is not None}

    async def fetch_rows(
        self, listing_ids: Sequence[str], write_token: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Rows by listing id, for metadata-only refreshes. With the rows' newest write token
        the read waits only for that write; without one it is Strong (on a Milvus server a
        Strong read waits for the next time tick, ~200 ms)."""
        if not listing_ids:
            return {}
        ids = list(listing_ids)
        fields = [*ROW_FIELDS, IMAGE_VECTOR_FIELD] if self.stores_covers else list(ROW_FIELDS)
        level = consistency("Strong", write_token)
        rows = await self._retry(
            "query",
            lambda c: c.query(self._layout.name, ids=ids, output_fields=fields, **level),
        )
        return {row["listing_id"]: dict(row) for row in rows}
