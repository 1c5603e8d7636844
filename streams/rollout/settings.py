"""Settings of ``vitrine rollout`` (one frozen object): the embedder's, plus the job's own."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from streams.settings import EmbedderSettings


class RolloutSettings(EmbedderSettings):
    """``VITRINE_ROLLOUT_*`` on top of the embedder's settings (fetching, Milvus, topics)."""

    metrics_port: int = Field(
        default=9466, ge=0, le=65535, description="Port of the rollout job's /metrics; 0 = off."
    )
    rollout_batch_size: int = Field(
        default=256, ge=1, le=8192, description="Listings encoded and written together."
    )
    rollout_depth: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches prepared (fetched, decoded) ahead of the one being encoded.",
    )
    rollout_cover_cache: bool = Field(
        default=True,
        description="Keep fetched covers on disk by sha256 (VITRINE_HOME/rollout/covers): a "
        "restarted or repeated rollout does not fetch them again.",
    )
    rollout_wait_s: float = Field(
        default=120.0,
        ge=0,
        le=86_400,
        description="How long `cutover` waits for the candidate to catch up, and `finish` for "
        "every embedder to switch to it, before refusing.",
    )
    rollout_progress_every_s: float = Field(
        default=2.0, gt=0, le=600, description="How often the job reports progress."
    )

    @property
    def rollout_home(self) -> Path:
        """Local files of the rollout job (cover cache, progress)."""
        return self.home / "rollout"
