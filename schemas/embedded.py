"""Embedded events (topic ``listings.embedded``, key = listing_id)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from . import limits
from .fields import (
    ContractModel,
    EventId,
    ListingId,
    ListingVersion,
    ModelVersion,
    Timestamp,
    UnitInterval,
)
from .registry import EMBEDDED_EVENT

LISTINGS_EMBEDDED_TOPIC = "listings.embedded"
MAX_WRITE_TOKEN = 2**63 - 1  # Milvus hybrid timestamps are uint64; JSON readers keep int64


class Outcome(StrEnum):
    """What the embedder did with the vector store row."""

    EMBEDDED = "embedded"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


class EmbeddedEvent(ContractModel):
    """One listing version became searchable (or was removed) under ``model_version``."""

    contract = EMBEDDED_EVENT

    event_id: EventId | None = None
    listing_id: ListingId
    version: ListingVersion
    outcome: Outcome
    model_version: ModelVersion
    mismatch_score: UnitInterval | None = None
    occurred_at: Timestamp
    embedded_at: Timestamp
    freshness_seconds: Annotated[
        float, Field(ge=0, le=limits.MAX_FRESHNESS_SECONDS, allow_inf_nan=False)
    ]
    # The vector store's timestamp of the write, for read-your-writes; absent when unknown.
    write_token: Annotated[int, Field(ge=0, le=MAX_WRITE_TOKEN)] | None = None

    @model_validator(mode="after")
    def _score_present(self) -> Self:
        if self.outcome is not Outcome.DELETED and self.mismatch_score is None:
            raise ValueError(f"{self.outcome.value} events need mismatch_score")
        return self


def freshness_seconds(occurred_at: datetime, embedded_at: datetime) -> float:
    """Seconds from the listing event to searchable, clamped into the contract's range.

    Producer and embedder clocks differ; a negative gap means skew, not time travel.
    """
    gap = (embedded_at - occurred_at).total_seconds()
    return min(max(gap, 0.0), float(limits.MAX_FRESHNESS_SECONDS))
