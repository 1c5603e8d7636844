"""The one error a contract check raises, and its stable reason codes."""

from __future__ import annotations

from enum import StrEnum

from vitrine.errors import VitrineError


class Reason(StrEnum):
    """Stable reason codes of :class:`ContractError` (documented in docs/contracts.md).

    They end up in dead-letter headers, recall replies and metric labels: never rename one,
    only add.
    """

    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    TOO_LONG = "too_long"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    SCHEMA_VIOLATION = "schema_violation"


class ContractError(VitrineError):
    """A payload or header set does not satisfy its wire contract.

    ``reason`` is one of :class:`Reason`; ``field`` is the JSON path of the offending field
    (``price.amount``, ``image_urls[3]``, a header name), or None when the whole payload is
    at fault (not JSON, too large, not an object).
    """

    reason: str = Reason.SCHEMA_VIOLATION

    def __init__(
        self,
        message: str,
        *,
        reason: Reason,
        field: str | None = None,
        contract: str | None = None,
    ) -> None:
        super().__init__(message, reason=str(reason))
        self.field = field
        self.contract = contract
