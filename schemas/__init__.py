"""Vitrine's wire contracts: JSON Schema files (the source of truth) and the frozen pydantic
models that mirror them, with decode/encode helpers that raise one error type.

Topics, keys, limits, reason codes and the compatibility policy: docs/contracts.md.
"""

from .catalogue import (
    CONTROL_TOPIC,
    LISTINGS_STATE_TOPIC,
    LIVE_KEY,
    ROLLOUT_KEY,
    CatalogueEntry,
    LivePointer,
    PointerReason,
    RolloutPhase,
    RolloutRecord,
)
from .codec import (
    decode,
    decode_catalogue_entry,
    decode_embedded_event,
    decode_listing_event,
    decode_live_pointer,
    decode_recall_reply,
    decode_recall_request,
    decode_rollout_record,
    encode,
    from_payload,
    parse_json,
    to_payload,
)
from .dead_letter import (
    LISTINGS_EVENTS_DLQ_TOPIC,
    DeadLetter,
    DeadLetterStage,
    dead_letter_headers,
)
from .embedded import LISTINGS_EMBEDDED_TOPIC, EmbeddedEvent, Outcome, freshness_seconds
from .errors import ContractError, Reason
from .fields import ContractModel, Price
from .headers import (
    CORRELATION_ID_HEADER,
    REPLY_PARTITION_HEADER,
    REPLY_TOPIC_HEADER,
    ReplyRoute,
    decode_reply_partition,
    encode_reply_partition,
)
from .limits import MAX_PAYLOAD_BYTES
from .listing import LISTINGS_EVENTS_TOPIC, EventType, ListingEvent
from .recall import (
    RECALL_REQUESTS_TOPIC,
    PriceRange,
    RecallFilters,
    RecallItem,
    RecallQuery,
    RecallReply,
    RecallRequest,
    RecallStatus,
)
from .registry import CONTRACTS, SCHEMA_VERSION, SUPPORTED_VERSIONS, load_schema, validator_for

__all__ = [
    "CONTRACTS",
    "CONTROL_TOPIC",
    "CORRELATION_ID_HEADER",
    "LISTINGS_EMBEDDED_TOPIC",
    "LISTINGS_EVENTS_DLQ_TOPIC",
    "LISTINGS_EVENTS_TOPIC",
    "LISTINGS_STATE_TOPIC",
    "LIVE_KEY",
    "MAX_PAYLOAD_BYTES",
    "RECALL_REQUESTS_TOPIC",
    "REPLY_PARTITION_HEADER",
    "REPLY_TOPIC_HEADER",
    "ROLLOUT_KEY",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "CatalogueEntry",
    "ContractError",
    "ContractModel",
    "DeadLetter",
    "DeadLetterStage",
    "EmbeddedEvent",
    "EventType",
    "ListingEvent",
    "LivePointer",
    "Outcome",
    "PointerReason",
    "Price",
    "PriceRange",
    "Reason",
    "RecallFilters",
    "RecallItem",
    "RecallQuery",
    "RecallReply",
    "RecallRequest",
    "RecallStatus",
    "ReplyRoute",
    "RolloutPhase",
    "RolloutRecord",
    "dead_letter_headers",
    "decode",
    "decode_catalogue_entry",
    "decode_embedded_event",
    "decode_listing_event",
    "decode_live_pointer",
    "decode_recall_reply",
    "decode_recall_request",
    "decode_reply_partition",
    "decode_rollout_record",
    "encode",
    "encode_reply_partition",
    "freshness_seconds",
    "from_payload",
    "load_schema",
    "parse_json",
    "to_payload",
    "validator_for",
]
