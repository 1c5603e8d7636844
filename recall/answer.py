"""Answering a batch of raw requests against a :class:`VectorIndex` (no Kafka here).

Every input gets exactly one reply, in input order, whatever the input: undecodable or
out-of-contract requests are ``invalid``, late ones ``expired`` (no search), unknown seeds
``not_found``, Milvus failures ``error`` — only the requests of the failed call, never the batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas import ContractError, RecallReply, RecallRequest, RecallStatus, limits, parse_json
from schemas.codec import from_payload
from schemas.violations import from_model_error
from vitrine.vectorstore import IMAGE_VECTOR_FIELD

from . import metrics, replies
from .batching import SearchQuery, plan_searches
from .errors import EmbeddingFailed, InvalidQuery, SearchFailed
from .filters import filter_expression, quote
from .index import VectorIndex
from .query_embedding import QueryEmbedder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One request record value as read, with the monotonic time it was read."""

    value: bytes | None
    received_at: float


def decode(value: bytes | None) -> tuple[RecallRequest | None, ContractError | None, str | None]:
    """(request, None, request_id) or (None, error, request_id-if-salvageable)."""
    try:
        payload = parse_json(value, RecallRequest.contract)
    except ContractError as exc:
        return None, exc, None
    request_id = replies.salvage_request_id(payload)
    try:
        return _request(payload), None, request_id
    except ContractError as exc:
        return None, exc, request_id


def _request(payload: object) -> RecallRequest:
    """The request of a parsed payload, with its query vector checked apart from jsonschema.

    jsonschema checks an array item by item in Python: 2.3 ms for a 256-d vector, most of a
    request's decode. The schema's whole rule for the vector (1..MAX_VECTOR_DIM JSON numbers)
    is checked here in one pass, the rest of the payload by the schema with a stand-in vector,
    and the model validates the real payload (every number a finite float). A vector that
    breaks the rule goes through the schema as before, which names the violation.
    """
    query = payload.get("query") if isinstance(payload, dict) else None
    vector = query.get("vector") if isinstance(query, dict) else None
    if not (
        isinstance(payload, dict)
        and isinstance(query, dict)
        and isinstance(vector, list)
        and 1 <= len(vector) <= limits.MAX_VECTOR_DIM
        and all(type(x) is float or type(x) is int for x in vector)
    ):
        return from_payload(payload, RecallRequest)
    from_payload({**payload, "query": {**query, "vector": [0.0]}}, RecallRequest)
    try:
        return RecallRequest.model_validate(payload)
    except ValidationError as exc:
        raise from_model_error(RecallRequest.contract, exc) from exc


class RecallAnswerer:
    """Turns batches of request values into replies, batching compatible searches."""

    def __init__(
        self,
        index: VectorIndex,
        *,
        max_search_vectors: int = 128,
        default_model_version: str = "unknown",
        embedder: QueryEmbedder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._embedder = embedder
        self._max_vectors = max_search_vectors
        self._default_model = default_model_version
        self._clock = clock
        self._monotonic = monotonic

    @property
    def collection(self) -> str:
        """The collection searched (the index's, when it names one)."""
        layout = getattr(self._index, "layout", None)
        return str(getattr(layout, "name", ""))

    def answer(self, batch: Sequence[Inbound]) -> list[RecallReply]:
        """One reply per element of ``batch``, in the same order."""
        out: list[RecallReply | None] = [None] * len(batch)
        now = self._clock()
        decoded: dict[int, RecallRequest] = {}
        for i, inbound in enumerate(batch):
            request, error, request_id = decode(inbound.value)
            if error is not None or request is None:
                reason = error.reason if error is not None else "invalid_value"
                out[i] = self._fail(inbound, RecallStatus.INVALID, reason, str(error), request_id)
            elif replies.deadline_passed(request, now):
                out[i] = self._fail(
                    inbound,
                    RecallStatus.EXPIRED,
                    "deadline_passed",
                    f"deadline {request.deadline.isoformat() if request.deadline else ''} "
                    "passed before the request was read",
                    request.request_id,
                )
            else:
                decoded[i] = request
        self._answer_valid(batch, decoded, out)
        done = [reply for reply in out if reply is not None]
        if len(done) != len(batch):  # a bug, not an input problem: the worker answers "error"
            raise RuntimeError(f"{len(batch) - len(done)} requests were left without a reply")
        return done

    # -- internals ---------------------------------------------------------------------------

    def _answer_valid(
        self,
        batch: Sequence[Inbound],
        requests: dict[int, RecallRequest],
        out: list[RecallReply | None],
    ) -> None:
        seeds: dict[int, str] = {
            i: r.query.listing_id for i, r in requests.items() if r.query.listing_id is not None
        }
        stored = {}
        if seeds:
            tokens = [t for i in seeds if (t := requests[i].write_token) is not None]
            try:
                stored = self._index.lookup(
                    sorted(set(seeds.values())), write_token=max(tokens) if tokens else None
                )
            except SearchFailed as exc:
                log.warning("seed lookup failed for %d requests: %s", len(seeds), exc)
                for i in seeds:
                    out[i] = self._fail(
                        batch[i],
                        RecallStatus.ERROR,
                        exc.reason,
                        exc.message,
                        requests[i].request_id,
                    )
        queries: list[SearchQuery[int]] = []
        for i, request in requests.items():
            if out[i] is not None:
                continue
            try:
                expression = filter_expression(request.filters)
                if request.query.listing_id is not None:
                    seed = stored.get(request.query.listing_id)
                    if seed is None:
                        out[i] = self._fail(
                            batch[i],
                            RecallStatus.NOT_FOUND,
                            "listing_not_indexed",
                            f"listing {request.query.listing_id} is not in the index",
                            request.request_id,
                        )
                        continue
                    vector, limit = seed.vector, request.k + 1
                elif request.query.vector is not None:
                    vector, limit = self._checked_vector(request.query.vector), request.k
                else:
                    if replies.deadline_passed(request, self._clock()):
                        # Embedding a photo costs milliseconds; earlier ones may have used
                        # up this request's time.
                        out[i] = self._fail(
                            batch[i],
                            RecallStatus.EXPIRED,
                            "deadline_passed",
                            "deadline passed before the query could be embedded",
                            request.request_id,
                        )
                        continue
                    vector, model = self._embedded(request)
                    # Only rows written by the same model share the query's space.
                    same_model = f"(model_version == {quote(model)})"
                    expression = f"{expression} and {same_model}" if expression else same_model
                    token = request.write_token
                    queries.append(
                        SearchQuery(i, vector, expression, request.k, token, IMAGE_VECTOR_FIELD)
                    )
                    continue
            except InvalidQuery as exc:
                out[i] = self._fail(
                    batch[i], RecallStatus.INVALID, exc.reason, exc.message, request.request_id
                )
                continue
            except EmbeddingFailed as exc:
                out[i] = self._fail(
                    batch[i], RecallStatus.ERROR, exc.reason, exc.message, request.request_id
                )
                continue
            queries.append(SearchQuery(i, vector, expression, limit, request.write_token))
        for job in plan_searches(queries, self._max_vectors):
            started = self._monotonic()
            try:
                results = self._index.search(
                    job.vectors,
                    job.expression,
                    job.limit,
                    write_token=job.write_token,
                    field=job.field,
                )
                if len(results) != len(job.queries):
                    raise SearchFailed(
                        f"search returned {len(results)} result lists for "
                        f"{len(job.queries)} vectors",
                        reason="milvus_search_failed",
                    )
            except SearchFailed as exc:
                metrics.SEARCH_FAILURES.labels(reason=exc.reason).inc()
                log.warning("search of %d vectors failed: %s", len(job.queries), exc)
                for query in job.queries:
                    out[query.key] = self._fail(
                        batch[query.key],
                        RecallStatus.ERROR,
                        exc.reason,
                        exc.message,
                        requests[query.key].request_id,
                    )
                continue
            finally:
                metrics.SEARCH_DURATION.observe(self._monotonic() - started)
                metrics.SEARCH_BATCH_SIZE.observe(len(job.queries))
            for query, hits in zip(job.queries, results, strict=True):
                request = requests[query.key]
                seed_id = request.query.listing_id
                items = replies.select_items(hits, request.k, exclude=seed_id)
                seed_model = stored[seed_id].model_version if seed_id in stored else None
                if query.field == IMAGE_VECTOR_FIELD and self._embedder is not None:
                    seed_model = self._embedder.model_version
                first_hit_model = hits[0].model_version if hits else None
                model = replies.safe_model_version(
                    seed_model, first_hit_model, default=self._default_model
                )
                out[query.key] = replies.ok(
                    request.request_id,
                    items,
                    model,
                    self._monotonic() - batch[query.key].received_at,
                )

    def _embedded(self, request: RecallRequest) -> tuple[tuple[float, ...], str]:
        """A text or photo query's vector in the shared space and the model that made it."""
        if self._embedder is None:
            raise EmbeddingFailed(
                "this worker has no model for text and photo queries (VITRINE_MODEL_DIR)",
                reason="model_unavailable",
            )
        if self._index.shared_dim is None:
            raise EmbeddingFailed(
                "the collection holds no cover vectors in a shared image-title space; it was "
                "written by a model without one",
                reason="no_shared_space",
            )
        vector = self._embedder.embed(request.query)
        if len(vector) != self._index.shared_dim:
            raise EmbeddingFailed(
                f"the model embeds queries in {len(vector)} dimensions, the collection's cover "
                f"vectors have {self._index.shared_dim}",
                reason="dimension_mismatch",
            )
        return vector, self._embedder.model_version

    def _checked_vector(self, vector: Sequence[float]) -> tuple[float, ...]:
        if len(vector) != self._index.dim:
            raise InvalidQuery(
                f"query vector has {len(vector)} dimensions, the index holds {self._index.dim}",
                reason="dimension_mismatch",
            )
        if math.fsum(x * x for x in vector) == 0.0:
            raise InvalidQuery("query vector is all zeros (no direction)", reason="zero_vector")
        return tuple(float(x) for x in vector)

    def _fail(
        self,
        inbound: Inbound,
        status: RecallStatus,
        reason: str,
        message: str,
        request_id: str | None,
    ) -> RecallReply:
        return replies.failure(
            status, reason, message, request_id, self._monotonic() - inbound.received_at
        )
