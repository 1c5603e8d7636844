"""Grouping requests that can share one Milvus search (pure).

Requests with the same filter expression are searched together; the search returns as many
hits as the largest need in the group (``k``, plus one for a listing query whose seed will be
dropped), and each request keeps its own first ``k``. On an exact index (FLAT, milvus-lite) the
top ``k`` of a larger top list is exactly the top ``k``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SearchQuery(Generic[K]):
    """One vector to search for on behalf of request ``key``."""

    key: K
    vector: tuple[float, ...]
    expression: str
    limit: int  # hits this request needs from the search
    write_token: int | None = None  # read-your-writes: the search must see this write
    field: str = "embedding"  # the rows' vector field compared with ``vector``


@dataclass(frozen=True, slots=True)
class SearchJob(Generic[K]):
    """One Milvus search call: many vectors, one expression, one limit."""

    expression: str
    limit: int
    queries: tuple[SearchQuery[K], ...]
    write_token: int | None = None  # the largest token of its queries: sees all their writes
    field: str = "embedding"

    @property
    def vectors(self) -> list[tuple[float, ...]]:
        """The query vectors, in the order of ``queries``."""
        return [q.vector for q in self.queries]


def plan_searches(queries: Sequence[SearchQuery[K]], max_vectors: int) -> list[SearchJob[K]]:
    """Group ``queries`` by vector field and expression, in order of first appearance, at most
    ``max_vectors`` per job; each job's limit is the largest limit among its queries.

    Queries with a write token are searched apart from those without: waiting for a write
    costs up to a Milvus time tick, which requests that did not ask for it must not pay. The
    tokened job waits for its largest token, which covers every smaller one.
    """
    if max_vectors < 1:
        raise ValueError("max_vectors must be at least 1")
    groups: dict[tuple[str, str, bool], list[SearchQuery[K]]] = {}
    for query in queries:
        key = (query.field, query.expression, query.write_token is not None)
        groups.setdefault(key, []).append(query)
    jobs: list[SearchJob[K]] = []
    for (field, expression, tokened), members in groups.items():
        for start in range(0, len(members), max_vectors):
            chunk = tuple(members[start : start + max_vectors])
            token = max(q.write_token or 0 for q in chunk) if tokened else None
            jobs.append(SearchJob(expression, max(q.limit for q in chunk), chunk, token, field))
    return jobs
