"""Every Prometheus metric of the embedder, in base units.

Labels are stages, outcomes, reasons and model versions only: never listing ids or URLs.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from vitrine.observability import serve_metrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300)

FRESHNESS = Histogram(
    "vitrine_embedder_freshness_seconds",
    "Listing event time to searchable row (or row removed), per written event.",
    ["outcome"],
    buckets=_FRESHNESS_BUCKETS,
)
STAGE_DURATION = Histogram(
    "vitrine_embedder_stage_duration_seconds",
    "Time spent per stage: fetch (one image), decode (one image), encode and upsert (a batch).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "vitrine_embedder_batch_size_events",
    "Events per micro-batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
EVENTS = Counter(
    "vitrine_embedder_events_total",
    "Events finished, by outcome (embedded, unchanged, deleted, skipped_stale, "
    "dead_lettered) and dead-letter reason (empty otherwise).",
    ["outcome", "reason"],
)
IMAGE_FETCHES = Counter(
    "vitrine_embedder_image_fetches_total",
    "Image fetch attempts by result (ok or the failure reason).",
    ["result"],
)
IMAGE_BYTES = Histogram(
    "vitrine_embedder_image_bytes",
    "Size of fetched cover images.",
    buckets=(1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7),
)
IMAGE_CACHE = Counter(
    "vitrine_embedder_image_cache_total", "Preprocessed-image cache lookups.", ["result"]
)
MISMATCH = Histogram(
    "vitrine_embedder_mismatch_score",
    "Image-title mismatch score of embedded listings.",
    ["model_version"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
)
MILVUS_RETRIES = Counter(
    "vitrine_embedder_milvus_retries_total", "Milvus calls retried after a failure.", ["op"]
)
CONSUMER_LAG = Gauge(
    "vitrine_embedder_consumer_lag_messages",
    "Events on the listing events topic not yet finished, per assigned partition "
    "(high watermark minus the offset processing has reached).",
    ["partition"],
)
COMMITS = Counter("vitrine_embedder_offset_commits_total", "Offset commits sent to Kafka.")
SEEKS_BACK = Counter(
    "vitrine_embedder_seeks_back_total",
    "Seeks back to offsets the consumer fetched but never delivered (streams/ledger.py).",
)
SEEKS_BACK_TIMED_OUT = Counter(
    "vitrine_embedder_seeks_back_timed_out_total",
    "Seeks back that faust's consumer thread did not finish within 10 s (tried again).",
)
IN_FLIGHT = Gauge("vitrine_embedder_in_flight_events", "Events received and not yet finished.")
HEARTBEAT = Gauge(
    "vitrine_embedder_heartbeat_timestamp_seconds",
    "Unix time of the last pipeline loop turn; stale means a stuck embedder.",
)
MODEL = Gauge(
    "vitrine_embedder_model_info",
    "The collection this replica writes and the model it writes it with (value 1).",
    ["collection", "model_version"],
)
STREAM_SWITCHES = Counter(
    "vitrine_embedder_stream_switches_total",
    "Hand-overs to the collection and model the stream record names, by outcome: switched, "
    "or why it was refused (model_unloadable, model_mismatch, collection_missing, "
    "collection_of_another_model, collection_mismatch, milvus_unavailable, rollout_job_behind).",
    ["outcome"],
)
STREAM_PAUSE = Histogram(
    "vitrine_embedder_stream_pause_seconds",
    "How long a hand-over kept the replica from forming batches (drain, then the wait for the "
    "rollout job).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def beat() -> None:
    """Record that the pipeline is alive."""
    HEARTBEAT.set(time.time())


def serve(port: int) -> None:
    """Expose /metrics on ``port`` (all interfaces) when the port is not 0."""
    serve_metrics(port)
