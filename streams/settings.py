"""Settings of the embedder (``vitrine embedder``): one frozen object, validated at start."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from vitrine.settings import VitrineSettings


class EmbedderSettings(VitrineSettings):
    """``VITRINE_*`` variables of the streaming embedder; see docs/embedder.md for the table."""

    model_dir: Path | None = Field(
        default=None, description="Model directory (manifest.json + ONNX). Unset: HOME/models/cpu."
    )
    app_id: str = Field(
        default="vitrine-embedder",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="faust app id: the consumer group and the prefix of the version table topic.",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Events per micro-batch.")
    batch_wait_ms: int = Field(
        default=50, ge=1, le=60_000, description="Longest wait to fill a micro-batch (ms)."
    )
    pipeline_depth: int = Field(
        default=2, ge=1, le=16, description="Micro-batches in flight between stages."
    )
    fetch_connect_timeout_s: float = Field(default=2.0, gt=0, le=60, description="TCP connect.")
    fetch_total_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Whole image request, body included."
    )
    fetch_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Image body cap."
    )
    fetch_max_redirects: int = Field(default=3, ge=0, le=10, description="Redirects followed.")
    fetch_per_host: int = Field(default=8, ge=1, le=256, description="Connections per host.")
    fetch_concurrency: int = Field(default=32, ge=1, le=1024, description="Fetches in flight.")
    fetch_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries of a transient fetch failure (5xx, timeout)."
    )
    fetch_backoff_s: float = Field(
        default=0.2, ge=0, le=60, description="First retry delay of a fetch; doubles per try."
    )
    allow_loopback_images: bool = Field(
        default=False,
        description="Allow image URLs on 127.0.0.0/8 and ::1 (tests and the demo only).",
    )
    image_max_pixels: int = Field(
        default=40_000_000, ge=10_000, description="Decoded images with more pixels are refused."
    )
    image_cache_entries: int = Field(
        default=2048, ge=0, le=1_000_000, description="LRU of preprocessed images by sha256."
    )
    milvus_backoff_s: float = Field(
        default=0.5, gt=0, le=60, description="First retry delay while Milvus fails."
    )
    milvus_backoff_max_s: float = Field(
        default=10.0, gt=0, le=600, description="Longest retry delay while Milvus fails."
    )
    encode_threads: int = Field(
        default=2, ge=1, le=64, description="Threads of the executor (decode, encode, Milvus)."
    )
    ort_intra_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per session. Unset: half the cores (at least "
        "1), so image decoding in the executor overlaps the towers instead of competing.",
    )
    encode_process: bool = Field(
        default=True,
        description="Run the towers in a child process: in this one they wait for the GIL "
        "behind the event loop's Kafka, HTTP and Milvus calls (docs/benchmarks-pipeline.md).",
    )
    commit_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Longest time finished offsets wait to commit."
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=6,
        le=300,
        description="Kafka group session timeout: how soon a killed replica's partitions move.",
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of /metrics; 0 = off."
    )
    follow_stream: bool = Field(
        default=True,
        description="Follow the stream record of the control topic: write the collection, with "
        "the model, that `vitrine rollout finish` names (at start and while running).",
    )
    stream_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="How often the control topic is polled."
    )
    stream_switch_wait_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="Longest wait, once in-flight batches are durable, for the rollout job to "
        "write the new collection up to the state's end before switching to it; refused (and "
        "tried again later) after that.",
    )
    instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,50}$",
        description="This replica's name in its Kafka client.id and its stream acknowledgement. "
        "Unset: host name and process id.",
    )

    @model_validator(mode="after")
    def _defaults(self) -> EmbedderSettings:
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", self.home / "models" / "cpu")
        if self.milvus_backoff_max_s < self.milvus_backoff_s:
            raise ValueError("VITRINE_MILVUS_BACKOFF_MAX_S must be >= VITRINE_MILVUS_BACKOFF_S")
        return self

    @property
    def ort_threads(self) -> int:
        """Intra-op threads of each ONNX Runtime session."""
        if self.ort_intra_threads is not None:
            return self.ort_intra_threads
        return max(1, (os.cpu_count() or 2) // 2)

    @property
    def resolved_model_dir(self) -> Path:
        """The model directory, never None after validation."""
        assert self.model_dir is not None
        return self.model_dir
