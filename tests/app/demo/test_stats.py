"""The demo's figures and text, without Kafka."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.demo.stats import RunStats, percentile, render_recall, render_summary, summary


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([3.0], 99, 3.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 100, 4),
     (list(range(1, 101)), 99, 99)],
)  # fmt: skip
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_stats_fold_events_dead_letters_and_recall() -> None:
    stats = RunStats(produced=5, produced_poison=1)
    stats.on_embedded({"outcome": "embedded", "listing_id": "a", "freshness_seconds": 0.2,
                       "mismatch_score": 0.9})  # fmt: skip
    stats.on_embedded({"outcome": "embedded", "listing_id": "b", "freshness_seconds": 0.4,
                       "mismatch_score": 0.1})  # fmt: skip
    stats.on_embedded({"outcome": "deleted", "listing_id": "c", "freshness_seconds": 0.1})
    stats.on_dead_letter("malformed_json")
    stats.on_dead_letter("")
    stats.on_recall("ok", 0.02)
    figures = summary(stats, duration_s=10.04, milvus_rows=2, model_version="m1")
    assert figures["events_written"] == 3
    assert figures["delivery_failures"] == 0
    assert figures["outcomes"] == {"embedded": 2, "deleted": 1}
    assert figures["listings_embedded_this_run"] == 2
    assert figures["mismatch_share"] == 0.5
    # A listing embedded again counts once, with its latest score.
    stats.on_embedded({"outcome": "embedded", "listing_id": "a", "mismatch_score": 0.2})
    assert stats.mismatch_share == 0.0
    assert figures["freshness_s"] == {"p50": 0.2, "p95": 0.4, "p99": 0.4}
    assert figures["dead_letters"] == {"total": 2, "by_reason": {"malformed_json": 1,
                                                                 "unknown": 1}}  # fmt: skip
    assert figures["recall"]["by_status"] == {"ok": 1}
    text = render_summary(figures)
    for expected in ("rows in Milvus     2", "malformed_json 1", "50.0%", "m1", "10.0 s"):
        assert expected in text


def test_recall_answer_names_titles_and_scores() -> None:
    reply = SimpleNamespace(
        status="ok",
        items=(SimpleNamespace(listing_id="b", score=0.91234, mismatch_score=0.05),),
    )
    listings = {"a": {"title": "red guitar", "category": "guitars"},
                "b": {"title": "blue guitar", "category": "guitars"}}  # fmt: skip
    text = render_recall("a", reply, listings, 0.012)
    assert "'red guitar' [guitars]" in text.splitlines()[0]
    assert "ok in 12 ms" in text
    assert "1. 0.912 b 'blue guitar' [guitars] mismatch 0.05" in text
