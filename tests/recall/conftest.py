"""Recall test helpers: a collection of known vectors, the exact reference search, topics."""

from __future__ import annotations

import contextlib
import math
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from recall.index import Hit, StoredVector
from recall.settings import RecallSettings
from schemas import RecallFilters
from vitrine.settings import load

DIM = 16
CATEGORIES = ("shoes", "bags", "watches", "toys/lego", "home:kitchen")
CURRENCIES = ("EUR", "USD")


@dataclass(frozen=True)
class Catalog:
    """Known rows: ids, float32 vectors and the scalar fields recall filters read."""

    ids: list[str]
    vectors: np.ndarray  # float32, (n, DIM)
    category: list[str]
    price: list[float]
    currency: list[str]
    seller: list[str]
    mismatch: np.ndarray  # float32, multiples of 1/64 so filter bounds are never ambiguous
    model_version: str = "m-test.1"

    def rows(self) -> list[dict[str, object]]:
        """The rows as the embedder writes them (vitrine.vectorstore layout)."""
        return [
            {
                "listing_id": lid,
                "embedding": self.vectors[i].tolist(),
                "mismatch_score": float(self.mismatch[i]),
                "category": self.category[i],
                "price": self.price[i],
                "currency": self.currency[i],
                "seller_id": self.seller[i],
                "version": 1,
                "model_version": self.model_version,
                "occurred_at_ms": 0,
                "updated_at_ms": 0,
            }
            for i, lid in enumerate(self.ids)
        ]

    def index_of(self, listing_id: str) -> int:
        return self.ids.index(listing_id)

    def passes(self, i: int, filters: RecallFilters | None) -> bool:
        """The filters, applied in Python: the reference the worker's expression must match."""
        if filters is None:
            return True
        if filters.categories and self.category[i] not in filters.categories:
            return False
        pr = filters.price_range
        if pr is not None:
            if self.currency[i] != pr.currency:
                return False
            if pr.min is not None and self.price[i] < pr.min:
                return False
            if pr.max is not None and self.price[i] > pr.max:
                return False
        if self.seller[i] in filters.exclude_sellers:
            return False
        if self.ids[i] in filters.exclude_listings:
            return False
        return not (
            filters.max_mismatch is not None and float(self.mismatch[i]) > filters.max_mismatch
        )

    def exact(
        self,
        query: Sequence[float],
        k: int,
        filters: RecallFilters | None = None,
        exclude: str | None = None,
    ) -> list[tuple[str, float]]:
        """Brute-force cosine top-k with the same filters (numpy, float64 arithmetic)."""
        q = np.asarray(query, dtype=np.float64)
        v = self.vectors.astype(np.float64)
        scores = v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
        keep = [
            i for i in range(len(self.ids)) if self.ids[i] != exclude and self.passes(i, filters)
        ]
        keep.sort(key=lambda i: -scores[i])
        return [(self.ids[i], float(scores[i])) for i in keep[:k]]


def make_catalog(n: int = 400, seed: int = 7) -> Catalog:
    rng = np.random.default_rng(seed)
    return Catalog(
        ids=[f"L{i:05d}" for i in range(n)],
        vectors=rng.standard_normal((n, DIM)).astype(np.float32),
        category=[CATEGORIES[i % len(CATEGORIES)] for i in range(n)],
        price=[float(round(rng.uniform(1, 500), 2)) for _ in range(n)],
        currency=[CURRENCIES[i % 7 % 2] for i in range(n)],
        seller=[f"S{i % 13}" for i in range(n)],
        mismatch=(rng.integers(0, 65, n) / 64).astype(np.float32),
    )


class CatalogIndex:
    """In-memory VectorIndex over a Catalog (exact), recording its calls."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.searches: list[tuple[int, str, int]] = []  # (vectors, expression, limit)
        self.fail_expression: str | None = None
        self.fail_lookup = False
        self.tokens: list[tuple[str, int | None]] = []  # (call, write_token) of each call
        self.fields: list[str] = []
        #: Cover vectors in the shared space (None: a collection without them).
        self.image_vectors: np.ndarray | None = None
        # The fake cannot parse expressions; tests register the filters behind each one.
        self._filters_of: dict[str, RecallFilters | None] = {"": None}

    @property
    def dim(self) -> int:
        return int(self.catalog.vectors.shape[1])

    def lookup(
        self, listing_ids: Sequence[str], *, write_token: int | None = None
    ) -> dict[str, StoredVector]:
        from recall.errors import SearchFailed

        self.tokens.append(("lookup", write_token))
        if self.fail_lookup:
            raise SearchFailed("lookup down", reason="milvus_lookup_failed")
        out = {}
        for lid in listing_ids:
            if lid in self.catalog.ids:
                i = self.catalog.index_of(lid)
                out[lid] = StoredVector(
                    tuple(float(x) for x in self.catalog.vectors[i]), self.catalog.model_version
                )
        return out

    @property
    def shared_dim(self) -> int | None:
        return None if self.image_vectors is None else int(self.image_vectors.shape[1])

    def search(
        self,
        vectors: Sequence[Sequence[float]],
        expression: str,
        limit: int,
        *,
        write_token: int | None = None,
        field: str = "embedding",
    ) -> list[list[Hit]]:
        from recall.errors import SearchFailed

        self.searches.append((len(vectors), expression, limit))
        self.fields.append(field)
        if field == "image_vector":
            return self._search_images(vectors, expression, limit)
        self.tokens.append(("search", write_token))
        if self.fail_expression is not None and expression == self.fail_expression:
            raise SearchFailed("search down", reason="milvus_search_failed")
        filters = self._filters_of.get(expression)
        out = []
        for vector in vectors:
            hits = []
            for lid, score in self.catalog.exact(vector, limit, filters):
                i = self.catalog.index_of(lid)
                hits.append(
                    Hit(
                        lid,
                        score,
                        float(self.catalog.mismatch[i]),
                        self.catalog.category[i],
                        self.catalog.price[i],
                        self.catalog.currency[i],
                        self.catalog.model_version,
                    )
                )
            out.append(hits)
        return out

    def _search_images(
        self, vectors: Sequence[Sequence[float]], expression: str, limit: int
    ) -> list[list[Hit]]:
        """Exact cosine over ``image_vectors``; the expression must end with the model clause
        the answerer adds, and only rows of the model it names match."""
        import re

        assert self.image_vectors is not None
        match = re.fullmatch(r'(?:(.*) and )?\(model_version == "([^"]*)"\)', expression)
        assert match, expression
        filters = self._filters_of.get(match.group(1) or "")
        if match.group(2) != self.catalog.model_version:
            return [[] for _ in vectors]
        images = self.image_vectors.astype(np.float64)
        out = []
        for vector in vectors:
            q = np.asarray(vector, dtype=np.float64)
            scores = images @ q / (np.linalg.norm(images, axis=1) * np.linalg.norm(q))
            keep = [int(i) for i in np.argsort(-scores) if self.catalog.passes(int(i), filters)]
            c = self.catalog
            out.append(
                [
                    Hit(
                        c.ids[i],
                        float(scores[i]),
                        float(c.mismatch[i]),
                        c.category[i],
                        c.price[i],
                        c.currency[i],
                        c.model_version,
                    )
                    for i in keep[:limit]
                ]
            )
        return out

    def register(self, filters: RecallFilters | None) -> None:
        from recall.filters import filter_expression

        self._filters_of[filter_expression(filters)] = filters


def assert_same_ranking(
    got: Sequence[tuple[str, float]], want: Sequence[tuple[str, float]], tol: float = 1e-4
) -> None:
    """Same length, same scores; ids equal except between near-tied neighbours."""
    assert len(got) == len(want), (got, want)
    for (gid, gscore), (wid, wscore) in zip(got, want, strict=True):
        assert math.isclose(gscore, wscore, abs_tol=tol), (gid, gscore, wid, wscore)
        if gid != wid:
            tied = [lid for lid, s in want if abs(s - wscore) <= tol]
            assert gid in tied, (gid, wid, got, want)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return make_catalog()


# -- integration helpers ------------------------------------------------------------------------


@dataclass
class RecallEnv:
    """Topics and a filled collection for one test module."""

    settings: RecallSettings
    catalog: Catalog


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    from vitrine.settings import InfraSettings
    from vitrine.topics import TopicSpec, ensure_topics

    s = load(InfraSettings, kafka_bootstrap=bootstrap)
    specs = [TopicSpec(n, p, 1, {"retention.ms": "3600000"}) for n, p in names.items()]
    ensure_topics(s, specs)


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.delete_topics(list(names), operation_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone is fine
            future.result()


def fill_collection(milvus: str, name: str, catalog: Catalog) -> None:
    from vitrine.vectorstore import CollectionLayout, ensure_collection, open_client

    client = open_client(milvus)
    ensure_collection(client, CollectionLayout(name, DIM, "FLAT"))
    rows = catalog.rows()
    for start in range(0, len(rows), 200):
        client.insert(name, rows[start : start + 200])
    # The worker reads at Bounded consistency: make the rows visible before it starts.
    client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    client.close()


def drop_collection(milvus: str, name: str) -> None:
    from vitrine.vectorstore import open_client

    client = open_client(milvus)
    client.drop_collection(name)
    client.close()


@pytest.fixture(scope="module")
def recall_env(kafka: str, milvus: str, catalog: Catalog) -> Iterator[RecallEnv]:
    """Requests topic (4 partitions), default replies topic (2), a filled collection."""
    tag = uuid.uuid4().hex[:10]
    requests, replies, collection = f"t_{tag}.requests", f"t_{tag}.replies", f"t_{tag}_listings"
    create_topics(kafka, {requests: 4, replies: 2})
    fill_collection(milvus, collection, catalog)
    settings = load(
        RecallSettings,
        kafka_bootstrap=kafka,
        milvus_collection=collection,
        topic_recall_requests=requests,
        topic_recall_replies=replies,
        topic_control=f"t_{tag}.control",  # none: the worker answers from milvus_collection
        recall_group_id=f"t_{tag}.workers",
        recall_poll_timeout_s=0.1,
        recall_session_timeout_ms=6000,
        metrics_port=0,
    )
    try:
        yield RecallEnv(settings, catalog)
    finally:
        delete_topics(kafka, [requests, replies])
        drop_collection(milvus, collection)


class WorkerThread:
    """A RecallWorker running in a thread of the test process."""

    def __init__(self, settings: RecallSettings) -> None:
        from recall.worker import RecallWorker, open_index

        self.worker = RecallWorker(settings, open_index(settings))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> WorkerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self._thread.join(timeout=30)
        self.worker.close()
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def worker(recall_env: RecallEnv) -> Iterator[WorkerThread]:
    """One worker answering the module's requests topic."""
    thread = WorkerThread(recall_env.settings).start()
    yield thread
    thread.stop()


def worker_env(settings: RecallSettings) -> dict[str, str]:
    """Environment for a `vitrine recall` subprocess that serves ``settings``' topics."""
    import os

    return {
        **os.environ,
        "VITRINE_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "VITRINE_MILVUS_COLLECTION": settings.milvus_collection,
        "VITRINE_TOPIC_RECALL_REQUESTS": settings.topic_recall_requests,
        "VITRINE_TOPIC_RECALL_REPLIES": settings.topic_recall_replies,
        "VITRINE_TOPIC_CONTROL": settings.topic_control,
        "VITRINE_RECALL_GROUP_ID": settings.recall_group_id,
        "VITRINE_RECALL_SESSION_TIMEOUT_MS": str(settings.recall_session_timeout_ms),
        "VITRINE_RECALL_POLL_TIMEOUT_S": str(settings.recall_poll_timeout_s),
        "VITRINE_METRICS_PORT": "0",
    }
