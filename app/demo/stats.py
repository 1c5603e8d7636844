"""What the demo shows: running figures from the embedded and dead-letter topics and recall
replies, rendered as text. Pure: no Kafka, no clocks except the ones passed in."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MISMATCH_THRESHOLD = 0.5


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RunStats:
    """Counters of one demo run, fed by the monitor loop."""

    produced: int = 0
    produced_poison: int = 0
    delivery_failed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    freshness_s: list[float] = field(default_factory=list)
    mismatch: dict[str, float] = field(default_factory=dict)  # listing -> latest score
    dead_letters: Counter[str] = field(default_factory=Counter)
    recall_status: Counter[str] = field(default_factory=Counter)
    recall_latency_s: list[float] = field(default_factory=list)
    embedded_listings: set[str] = field(default_factory=set)

    def on_embedded(self, event: Mapping[str, Any]) -> None:
        """Count one event read back from the embedded topic."""
        outcome = str(event.get("outcome", "?"))
        self.outcomes[outcome] += 1
        if event.get("freshness_seconds") is not None:
            self.freshness_s.append(float(event["freshness_seconds"]))
        if outcome == "embedded":
            self.embedded_listings.add(str(event.get("listing_id")))
            if event.get("mismatch_score") is not None:
                self.mismatch[str(event.get("listing_id"))] = float(event["mismatch_score"])

    def on_dead_letter(self, reason: str) -> None:
        """Count one dead letter by its reason header."""
        self.dead_letters[reason or "unknown"] += 1

    def on_recall(self, status: str, latency_s: float) -> None:
        """Count one recall round trip."""
        self.recall_status[status] += 1
        self.recall_latency_s.append(latency_s)

    @property
    def written(self) -> int:
        """Events the embedder reported on the embedded topic."""
        return sum(self.outcomes.values())

    @property
    def mismatch_share(self) -> float | None:
        """Share of embedded listings whose latest mismatch score is above the threshold."""
        if not self.mismatch:
            return None
        scores = self.mismatch.values()
        return sum(score > MISMATCH_THRESHOLD for score in scores) / len(self.mismatch)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def render_status(stats: RunStats, elapsed_s: float, written_rate: float) -> str:
    """One status line: throughput, freshness, mismatch share, dead letters."""
    share = stats.mismatch_share
    shown = "-" if share is None else f"{share:.1%}"
    return (
        f"[{elapsed_s:5.0f}s] produced {stats.produced:6d} | written {stats.written:6d} "
        f"({written_rate:5.1f}/s) | freshness p50 {_seconds(percentile(stats.freshness_s, 50))}"
        f" p99 {_seconds(percentile(stats.freshness_s, 99))} | mismatch "
        f"{shown} | dead letters {sum(stats.dead_letters.values())}"
    )


def render_recall(
    seed: str, reply: Any, listings: Mapping[str, Mapping[str, Any]], latency_s: float
) -> str:
    """A recall answer as text: the seed listing, then its neighbours with scores."""

    def describe(listing_id: str) -> str:
        info = listings.get(listing_id, {})
        title = info.get("title", "?")
        category = info.get("category", "?")
        return f"{title!r} [{category}]"

    lines = [f"recall  {seed} {describe(seed)}  -> {reply.status} in {_seconds(latency_s)}"]
    for rank, item in enumerate(reply.items or (), start=1):
        mismatch = "" if item.mismatch_score is None else f" mismatch {item.mismatch_score:.2f}"
        lines.append(
            f"   {rank}. {item.score:.3f} {item.listing_id} {describe(item.listing_id)}{mismatch}"
        )
    return "\n".join(lines)


def summary(
    stats: RunStats, *, duration_s: float, milvus_rows: int | None, model_version: str | None
) -> dict[str, Any]:
    """The end-of-run figures as a JSON-ready dict."""
    return {
        "duration_s": round(duration_s, 1),
        "model_version": model_version,
        "events_produced": stats.produced,
        "poison_produced": stats.produced_poison,
        "delivery_failures": stats.delivery_failed,
        "outcomes": dict(stats.outcomes),
        "events_written": stats.written,
        "listings_embedded_this_run": len(stats.embedded_listings),
        "milvus_rows": milvus_rows,
        "freshness_s": {f"p{q}": percentile(stats.freshness_s, q) for q in (50, 95, 99)},
        "mismatch_share": stats.mismatch_share,
        "recall": {
            "requests": sum(stats.recall_status.values()),
            "by_status": dict(stats.recall_status),
            "latency_s": {f"p{q}": percentile(stats.recall_latency_s, q) for q in (50, 99)},
        },
        "dead_letters": {
            "total": sum(stats.dead_letters.values()),
            "by_reason": dict(stats.dead_letters),
        },
    }


def render_summary(figures: Mapping[str, Any]) -> str:
    """The summary dict as an aligned text block."""
    fresh = figures["freshness_s"]
    recall = figures["recall"]
    dead = figures["dead_letters"]
    outcomes = " | ".join(f"{k} {v}" for k, v in sorted(figures["outcomes"].items())) or "-"
    reasons = " | ".join(f"{k} {v}" for k, v in sorted(dead["by_reason"].items()))
    share = figures["mismatch_share"]
    rows = [
        ("model", figures["model_version"] or "-"),
        ("duration", f"{figures['duration_s']} s"),
        (
            "events produced",
            f"{figures['events_produced']} acknowledged ({figures['poison_produced']} poison, "
            f"{figures.get('delivery_failures', 0)} not delivered)",
        ),
        ("outcomes written", outcomes),
        ("listings embedded", str(figures["listings_embedded_this_run"])),
        ("listings live", str(figures.get("listings_live", "-"))),
        ("rows in Milvus", "-" if figures["milvus_rows"] is None else str(figures["milvus_rows"])),
        ("freshness", " | ".join(f"{k} {_seconds(v)}" for k, v in fresh.items())),
        ("mismatch share", "-" if share is None else f"{share:.1%} scored > {MISMATCH_THRESHOLD}"),
        (
            "recall",
            f"{recall['requests']} requests {recall['by_status']} | "
            + " | ".join(f"{k} {_seconds(v)}" for k, v in recall["latency_s"].items()),
        ),
        ("dead letters", f"{dead['total']}" + (f" ({reasons})" if reasons else "")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["Vitrine demo summary"] + [f"  {n:<{width}}  {v}" for n, v in rows])
