"""Listing events (topic ``listings.events``, key = listing_id)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from . import limits
from .fields import (
    Category,
    ContractModel,
    EventId,
    ImageUrl,
    ListingId,
    ListingVersion,
    Marketplace,
    Price,
    SellerId,
    Timestamp,
)
from .registry import LISTING_EVENT

LISTINGS_EVENTS_TOPIC = "listings.events"


class EventType(StrEnum):
    """What happened to the listing."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


#: Fields a created or updated event must carry; a delete needs only its identity and version.
CONTENT_FIELDS = ("title", "image_urls", "category", "price", "seller_id", "marketplace")


class ListingEvent(ContractModel):
    """A listing was created, updated or deleted at ``version`` (monotonic per listing)."""

    contract = LISTING_EVENT

    event_id: EventId
    event_type: EventType
    listing_id: ListingId
    version: ListingVersion
    occurred_at: Timestamp
    title: Annotated[str, Field(min_length=1, max_length=limits.MAX_TITLE_CHARS)] | None = None
    image_urls: (
        Annotated[tuple[ImageUrl, ...], Field(min_length=1, max_length=limits.MAX_IMAGE_URLS)]
        | None
    ) = None
    category: Category | None = None
    price: Price | None = None
    seller_id: SellerId | None = None
    marketplace: Marketplace | None = None

    @model_validator(mode="after")
    def _content_present(self) -> Self:
        if self.event_type is not EventType.DELETED:
            missing = [name for name in CONTENT_FIELDS if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{self.event_type.value} events need {', '.join(missing)}")
        return self

    @property
    def cover_url(self) -> str | None:
        """The cover image (the first URL), or None for a delete."""
        return self.image_urls[0] if self.image_urls else None
