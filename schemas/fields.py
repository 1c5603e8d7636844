"""Constrained field types and the base model that every contract model shares."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from . import limits
from .registry import SCHEMA_VERSION


def _whole_minute_offset(value: datetime) -> datetime:
    # RFC 3339 offsets are +hh:mm; an offset with seconds would serialise as +hh:mm:ss.
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        raise ValueError("UTC offset must be a whole number of minutes")
    return value


ListingId = Annotated[str, Field(pattern=limits.LISTING_ID_PATTERN)]
SellerId = Annotated[str, Field(pattern=limits.SELLER_ID_PATTERN)]
Category = Annotated[
    str, Field(max_length=limits.MAX_CATEGORY_CHARS, pattern=limits.CATEGORY_PATTERN)
]
EventId = Annotated[str, Field(pattern=limits.EVENT_ID_PATTERN)]
RequestId = Annotated[str, Field(pattern=limits.REQUEST_ID_PATTERN)]
Marketplace = Annotated[str, Field(pattern=limits.MARKETPLACE_PATTERN)]
ModelVersion = Annotated[str, Field(pattern=limits.MODEL_VERSION_PATTERN)]
ReasonCode = Annotated[str, Field(pattern=limits.REASON_PATTERN)]
Currency = Annotated[str, Field(pattern=limits.CURRENCY_PATTERN)]
ImageUrl = Annotated[str, Field(max_length=limits.MAX_URL_CHARS, pattern=limits.IMAGE_URL_PATTERN)]
ListingVersion = Annotated[int, Field(ge=0, le=limits.MAX_VERSION)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_whole_minute_offset)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, le=limits.MAX_PRICE, allow_inf_nan=False)]


class ContractModel(BaseModel):
    """Base of every wire model: frozen, unknown fields ignored (see docs/contracts.md)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: Name of the JSON Schema contract this model mirrors (``schemas/json/<name>.vN.json``).
    contract: ClassVar[str]

    # A model always holds the current version: readers upgrade older payloads before
    # building it, and writers write what they are.
    schema_version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)


class StrictPart(BaseModel):
    """Base of nested objects whose unknown keys are rejected (recall query and filters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Part(BaseModel):
    """Base of nested objects that ignore unknown keys, like the top level does."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Price(Part):
    """A price in major units of an ISO 4217 currency."""

    amount: Amount
    currency: Currency
