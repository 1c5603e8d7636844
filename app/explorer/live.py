"""The live strip: freshness, throughput and dead letters, read from the services' /metrics.

Pure parsing and arithmetic here; the HTTP scrape lives in :mod:`app.explorer.web`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

FRESHNESS = "vitrine_embedder_freshness_seconds"
EVENTS = "vitrine_embedder_events_total"


@dataclass(frozen=True)
class Scrape:
    """What one scrape of the embedder's /metrics says, cumulative since it started."""

    at: float
    freshness_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)
    events: float
    dead_letters: float


@dataclass(frozen=True)
class LiveFigures:
    """The strip's figures; None where the metrics do not (yet) say."""

    freshness_p50_s: float | None
    freshness_p99_s: float | None
    events_per_s: float | None
    dead_letters: int | None


def parse_scrape(text: str, at: float) -> Scrape:
    """Sum the freshness histogram over its labels and count events and dead letters."""
    buckets: dict[float, float] = {}
    events = dead = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == FRESHNESS + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == EVENTS:
                events += sample.value
                if sample.labels.get("outcome") == "dead_lettered":
                    dead += sample.value
    return Scrape(at, tuple(sorted(buckets.items())), events, dead)


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative buckets (linear within a bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def figures(previous: Scrape | None, current: Scrape | None) -> LiveFigures:
    """Quantiles over the window between two scrapes (whole run when there is no previous)."""
    if current is None:
        return LiveFigures(None, None, None, None)
    window = current.freshness_buckets
    rate = None
    if previous is not None and current.at > previous.at:
        before = dict(previous.freshness_buckets)
        delta = tuple((b, c - before.get(b, 0.0)) for b, c in current.freshness_buckets)
        if current.events < previous.events or any(c < 0 for _, c in delta):
            # The embedder restarted (its counters began again): this scrape is the window.
            delta, rate = current.freshness_buckets, None
        else:
            rate = (current.events - previous.events) / (current.at - previous.at)
        # Nothing new in the window: no freshness to show (not the whole run's).
        window = delta
    return LiveFigures(
        freshness_p50_s=histogram_quantile(0.5, window),
        freshness_p99_s=histogram_quantile(0.99, window),
        events_per_s=rate,
        dead_letters=int(current.dead_letters),
    )
