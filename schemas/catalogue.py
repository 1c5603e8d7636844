"""The catalogue's state (topic ``listings.state``, compacted, key = listing_id) and the control
records that say which collection is live (topic ``vitrine.control``, compacted)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from . import limits
from .fields import (
    Category,
    ContractModel,
    EventId,
    ImageUrl,
    ListingId,
    ListingVersion,
    Marketplace,
    ModelVersion,
    Price,
    SellerId,
    Timestamp,
)
from .registry import CATALOGUE_ENTRY, LIVE_POINTER, ROLLOUT_RECORD, STREAM_ACK, STREAM_RECORD

LISTINGS_STATE_TOPIC = "listings.state"
CONTROL_TOPIC = "vitrine.control"
#: Keys of the control topic.
LIVE_KEY = b"live"
ROLLOUT_KEY = b"rollout"
STREAM_KEY = b"stream"
#: Prefix of the embedder replicas' acknowledgements: ``stream-ack/<app_id>/<client_id>``.
STREAM_ACK_PREFIX = b"stream-ack/"

COLLECTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_PATH_CHARS = 4096
MAX_OFFSET = limits.MAX_OFFSET

GROUP_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
APP_ID_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,255}$"

Collection = Annotated[str, Field(pattern=COLLECTION_PATTERN)]
Path = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]


class CatalogueEntry(ContractModel):
    """The newest valid version of one live listing whose row is durable: what a re-embed
    with another model needs (the vector store keeps neither titles nor image URLs)."""

    contract = CATALOGUE_ENTRY

    listing_id: ListingId
    version: ListingVersion
    occurred_at: Timestamp
    title: Annotated[str, Field(min_length=1, max_length=limits.MAX_TITLE_CHARS)]
    cover_url: ImageUrl
    cover_sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    category: Category
    price: Price
    seller_id: SellerId
    marketplace: Marketplace
    event_id: EventId | None = None


class PointerReason(StrEnum):
    """Why the live pointer moved."""

    INITIAL = "initial"
    CUTOVER = "cutover"
    ROLLBACK = "rollback"


class LivePointer(ContractModel):
    """The collection recall answers from, and the model that wrote every row of it."""

    contract = LIVE_POINTER

    collection: Collection
    model_version: ModelVersion
    model_dir: Path | None = None
    changed_at: Timestamp
    reason: PointerReason | None = None


class RolloutPhase(StrEnum):
    """Where a model rollout stands."""

    STARTED = "started"
    CUT_OVER = "cut_over"
    ROLLED_BACK = "rolled_back"
    FINISHED = "finished"


class RolloutRecord(ContractModel):
    """One model rollout: the collection live when it started and the candidate being filled."""

    contract = ROLLOUT_RECORD

    phase: RolloutPhase
    live_collection: Collection
    live_model_version: ModelVersion
    candidate_collection: Collection
    candidate_model_version: ModelVersion
    model_dir: Path
    started_at: Timestamp
    updated_at: Timestamp
    state_end_offsets: Annotated[
        tuple[Annotated[int, Field(ge=0, le=MAX_OFFSET)], ...], Field(max_length=1024)
    ]


class StreamRecord(ContractModel):
    """The collection the embedders write and the model they write it with."""

    contract = STREAM_RECORD

    collection: Collection
    model_version: ModelVersion
    model_dir: Path
    catch_up_group: Annotated[str, Field(pattern=GROUP_PATTERN)] | None = None
    changed_at: Timestamp


class StreamAck(ContractModel):
    """One embedder replica writes ``collection`` with ``model_version``."""

    contract = STREAM_ACK

    app_id: Annotated[str, Field(pattern=APP_ID_PATTERN)]
    client_id: Annotated[str, Field(pattern=CLIENT_ID_PATTERN)]
    collection: Collection
    model_version: ModelVersion
    acked_at: Timestamp


def stream_ack_key(app_id: str, client_id: str) -> bytes:
    """The control-topic key of one replica's acknowledgement."""
    return STREAM_ACK_PREFIX + f"{app_id}/{client_id}".encode()
