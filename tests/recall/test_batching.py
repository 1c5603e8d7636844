"""Grouping compatible requests into one search (pure)."""

from __future__ import annotations

import pytest

from recall.batching import SearchQuery, plan_searches


def q(key: int, expression: str = "", limit: int = 10) -> SearchQuery[int]:
    return SearchQuery(key, (float(key), 1.0), expression, limit)


def test_same_expression_shares_one_search_with_the_largest_limit() -> None:
    jobs = plan_searches([q(1, limit=5), q(2, limit=11), q(3, "x", 3), q(4, limit=2)], 100)
    assert [(j.expression, j.limit, [m.key for m in j.queries]) for j in jobs] == [
        ("", 11, [1, 2, 4]),
        ("x", 3, [3]),
    ]
    assert jobs[0].vectors == [(1.0, 1.0), (2.0, 1.0), (4.0, 1.0)]


def test_groups_are_split_at_max_vectors() -> None:
    jobs = plan_searches([q(i) for i in range(7)], 3)
    assert [len(j.queries) for j in jobs] == [3, 3, 1]
    assert [m.key for j in jobs for m in j.queries] == list(range(7))


def test_nothing_to_search() -> None:
    assert plan_searches([], 8) == []


def test_max_vectors_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan_searches([q(1)], 0)


def test_tokened_queries_are_searched_apart_and_wait_for_the_largest_token() -> None:
    queries = [
        SearchQuery("a", (1.0,), "", 10),
        SearchQuery("b", (1.0,), "", 10, write_token=7),
        SearchQuery("c", (1.0,), "", 10, write_token=3),
        SearchQuery("d", (1.0,), "", 10),
    ]
    jobs = plan_searches(queries, max_vectors=8)
    assert [([q.key for q in j.queries], j.write_token) for j in jobs] == [
        (["a", "d"], None),
        (["b", "c"], 7),
    ]
