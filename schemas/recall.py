"""Recall requests (topic ``recall.requests``) and their replies (the caller's reply topic)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from . import limits
from .fields import (
    Amount,
    Category,
    ContractModel,
    Currency,
    FiniteFloat,
    ListingId,
    ModelVersion,
    Part,
    Price,
    ReasonCode,
    RequestId,
    SellerId,
    StrictPart,
    Timestamp,
    UnitInterval,
)
from .registry import RECALL_REPLY, RECALL_REQUEST

RECALL_REQUESTS_TOPIC = "recall.requests"
#: Milvus timestamps are unsigned 64-bit; the ones it hands out fit a signed one for centuries.
MAX_WRITE_TOKEN = 2**63 - 1


class RecallQuery(StrictPart):
    """Exactly one of: a listing already in the index, a raw embedding vector, a phrase, or a
    photo (base64). Phrases and photos are embedded by the worker into the model's shared
    image-title space; whether they are blank or an image is the worker's call, so that it can
    answer with a precise reason (``empty_text``, ``not_an_image``, ``too_large``)."""

    listing_id: ListingId | None = None
    vector: (
        Annotated[tuple[FiniteFloat, ...], Field(min_length=1, max_length=limits.MAX_VECTOR_DIM)]
        | None
    ) = None
    text: Annotated[str, Field(max_length=limits.MAX_QUERY_TEXT_CHARS)] | None = None
    image: Annotated[str, Field(pattern=limits.BASE64_PATTERN)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [self.listing_id, self.vector, self.text, self.image]
        if sum(value is not None for value in given) != 1:
            raise ValueError("query needs exactly one of listing_id, vector, text or image")
        return self

    @property
    def kind(self) -> str:
        """``listing_id``, ``vector``, ``text`` or ``image``: which one this query is."""
        for name in ("listing_id", "vector", "text", "image"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated queries have exactly one kind")


class PriceRange(StrictPart):
    """Items priced in ``currency`` within [min, max]; either bound may be left open."""

    min: Amount | None = None
    max: Amount | None = None
    currency: Currency

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        # The one cross-field rule JSON Schema cannot state; readers enforce it.
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RecallFilters(StrictPart):
    """Constraints applied inside the vector search; every list is bounded."""

    categories: (
        Annotated[
            tuple[Category, ...], Field(min_length=1, max_length=limits.MAX_FILTER_CATEGORIES)
        ]
        | None
    ) = None
    price_range: PriceRange | None = None
    exclude_sellers: Annotated[
        tuple[SellerId, ...], Field(max_length=limits.MAX_EXCLUDE_SELLERS)
    ] = ()
    exclude_listings: Annotated[
        tuple[ListingId, ...], Field(max_length=limits.MAX_EXCLUDE_LISTINGS)
    ] = ()
    max_mismatch: UnitInterval | None = None


class RecallRequest(ContractModel):
    """Find the ``k`` items closest to ``query`` that pass ``filters``, before ``deadline``."""

    contract = RECALL_REQUEST

    request_id: RequestId
    query: RecallQuery
    k: Annotated[int, Field(ge=1, le=limits.MAX_K)]
    filters: RecallFilters | None = None
    deadline: Timestamp | None = None
    #: Read your writes: the ``write_token`` of an embedded event; the search sees that write.
    write_token: Annotated[int, Field(ge=1, le=MAX_WRITE_TOKEN)] | None = None


class RecallStatus(StrEnum):
    """Outcome of one recall request."""

    OK = "ok"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    INVALID = "invalid"
    ERROR = "error"


class RecallItem(Part):
    """One hit, best first in the reply."""

    listing_id: ListingId
    score: FiniteFloat
    mismatch_score: UnitInterval | None = None
    category: Category | None = None
    price: Price | None = None


class RecallReply(ContractModel):
    """The answer to one request; ``reason`` says why whenever status is not ok."""

    contract = RECALL_REPLY

    request_id: RequestId | None = None
    status: RecallStatus
    reason: ReasonCode | None = None
    message: Annotated[str, Field(max_length=limits.MAX_MESSAGE_CHARS)] | None = None
    items: Annotated[tuple[RecallItem, ...], Field(max_length=limits.MAX_REPLY_ITEMS)] | None = None
    model_version: ModelVersion | None = None
    took_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _status_fields(self) -> Self:
        if self.status is RecallStatus.OK:
            missing = [
                name
                for name in ("request_id", "items", "model_version")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"ok replies need {', '.join(missing)}")
        elif self.reason is None:
            raise ValueError(f"{self.status.value} replies need a reason")
        return self
