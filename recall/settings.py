"""Settings of the recall worker and client (``VITRINE_RECALL_*`` on top of the shared ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from vitrine.settings import VitrineSettings

ConsistencyLevel = Literal["Strong", "Bounded", "Session", "Eventually"]


class RecallSettings(VitrineSettings):
    """One frozen settings object for ``vitrine recall`` and :class:`recall.RecallClient`."""

    metrics_port: int = Field(
        default=9465, ge=0, le=65535, description="Port of this process's /metrics; 0 = off."
    )
    recall_group_id: str = Field(
        default="vitrine-recall",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Consumer group shared by the worker replicas.",
    )
    recall_batch_max: int = Field(
        default=256, ge=1, le=10_000, description="Most requests read and answered together."
    )
    recall_poll_timeout_s: float = Field(
        default=0.5, gt=0, le=60, description="How long one poll waits for the first request."
    )
    recall_search_concurrency: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches answered at once: their Milvus searches overlap (replies and "
        "offsets still go out in the order the batches were read).",
    )
    recall_max_search_vectors: int = Field(
        default=128, ge=1, le=10_000, description="Most query vectors in one Milvus search."
    )
    recall_search_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Timeout of one Milvus lookup or search call."
    )
    recall_consistency_level: ConsistencyLevel = Field(
        default="Bounded",
        description="Milvus consistency of lookups and searches without a write_token. "
        "Bounded: no wait (a write is visible within about a time tick, 200 ms, on a Milvus "
        "server); Strong waits for the next time tick on every search (~200 ms). A request "
        "with a write_token always sees that write, whatever this level.",
    )
    recall_reply_timeout_s: float = Field(
        default=15.0, gt=0, le=600, description="How long the worker retries one reply."
    )
    recall_session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        le=300_000,
        description="Consumer group session timeout: how soon a dead replica's partitions move.",
    )
    recall_commit_interval_ms: int = Field(
        default=1_000, ge=100, le=60_000, description="How often stored offsets are committed."
    )
    recall_default_model_version: str = Field(
        default="unknown",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$",
        description="model_version of ok replies whose rows carry none (no hits, no seed).",
    )
    recall_follow_live: bool = Field(
        default=True,
        description="Answer from the collection the live pointer of the control topic "
        "(VITRINE_TOPIC_CONTROL) names, and follow it while running; false: always "
        "VITRINE_MILVUS_COLLECTION.",
    )
    model_dir: Path | None = Field(
        default=None,
        description="Serving model directory (the embedder's): text and photo queries are "
        "embedded with its towers. Default: $VITRINE_HOME/models/cpu.",
    )
    recall_client_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="Client: default deadline of one request."
    )
    recall_client_max_pending: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Client: most requests awaiting replies."
    )
    recall_client_reply_retention_ms: int = Field(
        default=600_000,
        ge=60_000,
        description="Client: retention of the reply topic a client creates for itself.",
    )

    @property
    def resolved_model_dir(self) -> Path:
        """The model directory text and photo queries are embedded with."""
        return self.model_dir or self.home / "models" / "cpu"
