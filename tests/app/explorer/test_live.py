"""The live strip's arithmetic: Prometheus text in, freshness quantiles and rates out."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.explorer.live import figures, histogram_quantile, parse_scrape


def _metrics(freshness: list[float], embedded: int, dead: int) -> str:
    registry = CollectorRegistry()
    hist = Histogram(
        "vitrine_embedder_freshness_seconds",
        "f",
        ["outcome"],
        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2),
        registry=registry,
    )
    events = Counter("vitrine_embedder_events_total", "e", ["outcome", "reason"], registry=registry)
    for i, value in enumerate(freshness):
        hist.labels(outcome="embedded" if i % 2 else "deleted").observe(value)
    events.labels(outcome="embedded", reason="").inc(embedded)
    events.labels(outcome="dead_lettered", reason="not_found").inc(dead)
    return generate_latest(registry).decode()


def test_scrape_sums_labels_and_counts_dead_letters() -> None:
    scrape = parse_scrape(_metrics([0.07, 0.3, 0.3, 3.0], embedded=10, dead=2), at=5.0)
    assert dict(scrape.freshness_buckets)[0.5] == 3
    assert dict(scrape.freshness_buckets)[math.inf] == 4
    assert (scrape.events, scrape.dead_letters) == (12, 2)


def test_quantile_interpolates_within_a_bucket_like_prometheus() -> None:
    buckets = ((0.1, 0.0), (0.2, 10.0), (math.inf, 10.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.199)
    assert histogram_quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))) is None
    # Everything beyond the last finite bound: that bound is the best answer.
    assert histogram_quantile(0.5, ((0.1, 0.0), (math.inf, 3.0))) == 0.1


def test_figures_cover_the_last_window_and_rate() -> None:
    first = parse_scrape(_metrics([2.0] * 50, embedded=100, dead=1), at=10.0)
    later = parse_scrape(_metrics([2.0] * 50 + [0.07] * 50, embedded=160, dead=1), at=13.0)
    live = figures(first, later)
    assert live.freshness_p50_s is not None and live.freshness_p50_s <= 0.1  # only the new ones
    assert live.events_per_s == pytest.approx(20.0)
    assert live.dead_letters == 1
    whole_run = figures(None, later)
    assert whole_run.events_per_s is None and whole_run.freshness_p99_s is not None
    assert whole_run.freshness_p99_s > 1.0
    assert figures(None, None).freshness_p50_s is None
