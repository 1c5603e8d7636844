"""Settings of ``vitrine explorer``: a recall client with a web page in front."""

from __future__ import annotations

from pydantic import Field, field_validator

from recall.settings import RecallSettings


class ExplorerSettings(RecallSettings):
    """The recall client's settings plus the page's own (``VITRINE_EXPLORER_*``).

    Cover thumbnails are fetched with the embedder's guarded fetcher, under the embedder's
    ``VITRINE_FETCH_*`` and ``VITRINE_ALLOW_LOOPBACK_IMAGES`` settings.
    """

    explorer_host: str = Field(default="127.0.0.1", description="Address the page listens on.")
    explorer_port: int = Field(
        default=8765, ge=0, le=65535, description="Port of the page; 0 = any free port."
    )
    explorer_metrics_url: str = Field(
        default="http://127.0.0.1:9464/metrics",
        description="The embedder's /metrics, read for the live strip; empty = no strip.",
    )
    explorer_k: int = Field(default=12, ge=1, le=200, description="Results per query.")
    explorer_thumbnail_px: int = Field(
        default=240, ge=32, le=1024, description="Longest side of a card's thumbnail."
    )
    explorer_thumbnail_cache: int = Field(
        default=1024, ge=0, le=100_000, description="Thumbnails kept in memory."
    )

    @field_validator("explorer_metrics_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL or an empty string")
        return value
