"""Dead letters: the original key and value untouched, the failure described in headers.

The header set follows the Kafka Connect dead-letter convention (one header per fact, UTF-8
string values) under the ``vitrine.dlq.`` prefix; ``dead_letter_headers.v1.json`` is its schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError

from vitrine.errors import VitrineError

from . import limits
from .errors import ContractError, Reason
from .fields import ModelVersion, Part, ReasonCode, Timestamp
from .registry import DEAD_LETTER_HEADERS, SCHEMA_VERSION, SUPPORTED_VERSIONS, validator_for
from .violations import from_model_error, from_schema_errors

LISTINGS_EVENTS_DLQ_TOPIC = "listings.events.dlq"
HEADER_PREFIX = "vitrine.dlq."


class DeadLetterStage(StrEnum):
    """The pipeline stage at which a record was given up on."""

    DECODE = "decode"
    VALIDATE = "validate"
    FETCH = "fetch"
    DECODE_IMAGE = "decode_image"
    ENCODE = "encode"
    UPSERT = "upsert"


def _truncate(limit: int) -> BeforeValidator:
    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 3] + "..."
        return value

    return BeforeValidator(cut)


class DeadLetter(Part):
    """Why a record went to the dead-letter topic; travels as ``vitrine.dlq.*`` headers."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    topic: Annotated[str, Field(pattern=limits.TOPIC_PATTERN)]
    partition: Annotated[int, Field(ge=0, le=limits.MAX_PARTITION)]
    offset: Annotated[int, Field(ge=0, le=limits.MAX_OFFSET)]
    stage: DeadLetterStage
    reason: ReasonCode
    message: Annotated[str, _truncate(limits.MAX_MESSAGE_CHARS)]
    field: Annotated[str, _truncate(limits.MAX_FIELD_PATH_CHARS)] | None = None
    failed_at: Timestamp
    attempts: Annotated[int, Field(ge=1, le=limits.MAX_ATTEMPTS)] | None = None
    model_version: ModelVersion | None = None

    @classmethod
    def from_error(
        cls,
        error: VitrineError,
        *,
        topic: str,
        partition: int,
        offset: int,
        stage: DeadLetterStage,
        failed_at: datetime | None = None,
        attempts: int | None = None,
        model_version: str | None = None,
    ) -> DeadLetter:
        """Describe ``error`` (its reason, message and, for contract errors, field)."""
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            stage=stage,
            reason=error.reason,
            message=error.message,
            field=getattr(error, "field", None),
            failed_at=failed_at or datetime.now(UTC),
            attempts=attempts,
            model_version=model_version,
        )

    def header_map(self) -> dict[str, str]:
        """Header name -> string value, the shape the JSON Schema describes."""
        values = self.model_dump(mode="json", exclude_none=True)
        return {HEADER_PREFIX + name: str(value) for name, value in values.items()}

    def to_headers(self) -> list[tuple[str, bytes]]:
        """The ``vitrine.dlq.*`` headers as Kafka wants them: (name, UTF-8 bytes) pairs."""
        return [(name, value.encode("utf-8")) for name, value in self.header_map().items()]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | str | None]] | None) -> DeadLetter:
        """Parse the ``vitrine.dlq.*`` headers of a record; other headers are ignored.

        If a name repeats, the last value wins (the latest failure). Raises ContractError
        with ``field`` set to the header name.
        """
        found: dict[str, str] = {}
        for name, raw in headers or ():
            if not name.startswith(HEADER_PREFIX) or raw is None:
                continue
            try:
                found[name] = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ContractError(
                    f"{DEAD_LETTER_HEADERS}: header {name!r} is not UTF-8",
                    reason=Reason.INVALID_VALUE,
                    field=name,
                    contract=DEAD_LETTER_HEADERS,
                ) from exc
        version_text = found.get(HEADER_PREFIX + "schema_version", "")
        version = int(version_text) if version_text.isascii() and version_text.isdigit() else 0
        supported = SUPPORTED_VERSIONS[DEAD_LETTER_HEADERS]
        if version > max(supported):
            raise ContractError(
                f"{DEAD_LETTER_HEADERS}: schema_version {version} is not supported by this "
                f"reader (supports {', '.join(map(str, supported))})",
                reason=Reason.UNSUPPORTED_VERSION,
                field=HEADER_PREFIX + "schema_version",
                contract=DEAD_LETTER_HEADERS,
            )
        errors = list(validator_for(DEAD_LETTER_HEADERS, max(supported)).iter_errors(found))
        if errors:
            raise from_schema_errors(DEAD_LETTER_HEADERS, errors)
        fields = {name.removeprefix(HEADER_PREFIX): value for name, value in found.items()}
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise from_model_error(DEAD_LETTER_HEADERS, exc) from exc


def dead_letter_headers(
    original: Iterable[tuple[str, bytes | None]] | None, dead_letter: DeadLetter
) -> list[tuple[str, bytes | None]]:
    """Headers for the dead-letter record: the original ones, minus any stale
    ``vitrine.dlq.*`` (a replayed record that failed again), plus this failure's."""
    kept = [(k, v) for k, v in original or () if not k.startswith(HEADER_PREFIX)]
    return [*kept, *dead_letter.to_headers()]
