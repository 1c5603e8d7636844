"""Prometheus metrics of the rollout job (``vitrine_rollout_*``), in base units."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "vitrine_rollout_records_total",
    "State records the job finished, by outcome: written (encoded into the candidate), "
    "deleted, already_done (the candidate holds that version or a newer one: not fetched, not "
    "encoded), superseded (a newer record of the listing came in the same batch), invalid, "
    "cover_failed (the cover could not be fetched or decoded).",
    ["outcome"],
)
COVERS = Counter(
    "vitrine_rollout_covers_total",
    "Covers by source: cache (on disk, by sha256), fetched (sha256 as recorded), changed "
    "(fetched bytes differ from the recorded sha256: embedded from what was fetched), failed.",
    ["source"],
)
STAGE_DURATION = Histogram(
    "vitrine_rollout_stage_duration_seconds",
    "Time per batch and stage: read, check, fetch, decode, encode, write.",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BEHIND = Gauge(
    "vitrine_rollout_behind_records",
    "State records not yet processed by the job (end offsets minus its position).",
)
BULK_REMAINING = Gauge(
    "vitrine_rollout_bulk_remaining_records",
    "Records of the bulk part (the state as it was when the rollout started) still to process.",
)
PROGRESS = Gauge(
    "vitrine_rollout_progress_timestamp_seconds",
    "Unix time of the job's last progress: a batch made durable, or nothing left to do.",
)
INFO = Gauge(
    "vitrine_rollout_info",
    "The rollout job running (value 1): candidate collection and its model.",
    ["candidate", "model_version"],
)


def progressed() -> None:
    """Record progress (liveness from work done, never from a timer)."""
    PROGRESS.set(time.time())
