"""Prometheus metrics of the recall worker and client, in base units, no per-listing labels."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

from vitrine.observability import serve_metrics

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# -- worker -----------------------------------------------------------------------------------
REQUESTS = Counter(
    "vitrine_recall_requests_total",
    "Recall requests answered by this worker, by reply status.",
    ["status"],
)
UNDELIVERABLE = Counter(
    "vitrine_recall_replies_undeliverable_total",
    "Replies that could not be produced (reply topic or partition missing, broker refusal).",
    ["reason"],
)
DURATION = Histogram(
    "vitrine_recall_duration_seconds",
    "From reading a request to its reply being acknowledged by the broker.",
    buckets=_LATENCY_BUCKETS,
)
SEARCH_DURATION = Histogram(
    "vitrine_recall_search_duration_seconds",
    "Duration of one Milvus search call (many query vectors).",
    buckets=_LATENCY_BUCKETS,
)
SEARCH_BATCH_SIZE = Histogram(
    "vitrine_recall_search_batch_size",
    "Query vectors per Milvus search call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
SEARCH_FAILURES = Counter(
    "vitrine_recall_search_failures_total", "Failed Milvus calls, by reason.", ["reason"]
)
POLL_BATCH_SIZE = Histogram(
    "vitrine_recall_poll_batch_size",
    "Requests read and answered together.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

LIVE = Gauge(
    "vitrine_recall_live_info",
    "1 for the collection (and the model that wrote it) this worker answers from.",
    ["collection", "model_version"],
)
POINTER_SWITCHES = Counter(
    "vitrine_recall_pointer_switches_total",
    "Moves of the live pointer followed (outcome=switched) or refused for now (outcome=failed: "
    "the named collection could not be opened; retried).",
    ["outcome"],
)

# -- client -----------------------------------------------------------------------------------
CLIENT_ROUND_TRIP = Histogram(
    "vitrine_recall_client_round_trip_seconds",
    "Client: from sending a request to receiving its reply.",
    buckets=_LATENCY_BUCKETS,
)
CLIENT_TIMEOUTS = Counter(
    "vitrine_recall_client_timeouts_total", "Client: requests with no reply before the deadline."
)
CLIENT_DROPPED = Counter(
    "vitrine_recall_client_replies_dropped_total",
    "Client: replies dropped; why=late (its request already timed out or was answered) or "
    "unknown (a correlation id this client never sent, or no correlation id).",
    ["why"],
)
CLIENT_PENDING = Gauge(
    "vitrine_recall_client_pending_requests", "Client: requests waiting for their reply."
)


def serve(port: int) -> bool:
    """Expose /metrics on ``port`` (0 = off); return True when it is being served."""
    if not serve_metrics(port):
        return False
    log.info("metrics on :%d/metrics", port)
    return True
