"""decode (bytes -> validated, frozen model) and encode (model -> compact UTF-8 JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from pydantic import ValidationError

from .catalogue import CatalogueEntry, LivePointer, RolloutRecord, StreamAck, StreamRecord
from .embedded import EmbeddedEvent
from .errors import ContractError, Reason
from .fastcheck import Check, compile_check
from .fields import ContractModel
from .limits import MAX_PAYLOAD_BYTES
from .listing import ListingEvent
from .recall import RecallReply, RecallRequest
from .registry import RECALL_REPLY, SCHEMA_VERSION, SUPPORTED_VERSIONS, load_schema, validator_for
from .violations import from_model_error, from_schema_errors

M = TypeVar("M", bound=ContractModel)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers may keep different copies of a duplicated key; refuse the ambiguity.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_json(data: bytes | bytearray | memoryview | None, contract: str) -> Any:
    """Bytes -> a JSON value, with the byte cap checked first. Raises ContractError."""
    if data is None:
        raise ContractError(
            f"{contract}: empty record value (tombstone)",
            reason=Reason.MALFORMED_JSON,
            contract=contract,
        )
    size = len(data)
    if size > MAX_PAYLOAD_BYTES:
        raise ContractError(
            f"{contract}: payload is {size} bytes, the limit is {MAX_PAYLOAD_BYTES}",
            reason=Reason.PAYLOAD_TOO_LARGE,
            contract=contract,
        )
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8 (byte {exc.start})"
    except RecursionError:
        detail = "nested too deeply"
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN/Infinity
        detail = f"not JSON ({exc})"
    raise ContractError(f"{contract}: {detail}", reason=Reason.MALFORMED_JSON, contract=contract)


def _check_version(payload: Mapping[str, Any], contract: str) -> int | None:
    version = payload.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None  # missing or mistyped: the schema check reports it
    supported = SUPPORTED_VERSIONS[contract]
    if version not in supported:
        raise ContractError(
            f"{contract}: schema_version {version} is not supported by this reader "
            f"(supports {', '.join(map(str, supported))})",
            reason=Reason.UNSUPPORTED_VERSION,
            field="schema_version",
            contract=contract,
        )
    return version


def from_payload(payload: Any, model_cls: type[M]) -> M:
    """A parsed JSON value -> a validated model of ``model_cls``. Raises ContractError."""
    contract = model_cls.contract
    if not isinstance(payload, dict):
        kind = "an array" if isinstance(payload, list) else type(payload).__name__
        raise ContractError(
            f"{contract}: payload must be a JSON object, got {kind}",
            reason=Reason.NOT_AN_OBJECT,
            contract=contract,
        )
    version = _check_version(payload, contract) or max(SUPPORTED_VERSIONS[contract])
    errors = list(validator_for(contract, version).iter_errors(payload))
    if errors:
        raise from_schema_errors(contract, errors)
    # Readers supporting an older version upgrade its payload to the current shape here.
    try:
        return model_cls.model_validate(payload)
    except ValidationError as exc:
        raise from_model_error(contract, exc) from exc


def decode(data: bytes | bytearray | memoryview | None, model_cls: type[M]) -> M:
    """Record value bytes -> a validated, frozen ``model_cls``. Raises ContractError only."""
    return from_payload(parse_json(data, model_cls.contract), model_cls)


def to_payload(model: ContractModel) -> dict[str, Any]:
    """The JSON-ready dict of a model; optional fields that are unset are left out."""
    payload: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return payload


def encode(model: ContractModel) -> bytes:
    """A model -> compact UTF-8 JSON; optional fields that are unset are left out, never null."""
    return model.model_dump_json(exclude_none=True).encode("utf-8")


def decode_listing_event(data: bytes | None) -> ListingEvent:
    """Decode a ``listings.events`` record value."""
    return decode(data, ListingEvent)


def decode_embedded_event(data: bytes | None) -> EmbeddedEvent:
    """Decode a ``listings.embedded`` record value."""
    return decode(data, EmbeddedEvent)


def decode_recall_request(data: bytes | None) -> RecallRequest:
    """Decode a ``recall.requests`` record value."""
    return decode(data, RecallRequest)


def decode_recall_reply(data: bytes | None) -> RecallReply:
    """Decode a recall reply record value.

    The schema's verdict on a reply's ``items`` comes from a compiled check when it accepts
    them (jsonschema would spend most of the decode there); the rest goes through the schema
    with the items stood in by ``[]``, which nothing else in the schema looks into. Items the
    check does not accept go through the schema as before, which names the violation.
    """
    payload = parse_json(data, RecallReply.contract)
    check = _reply_items_check()
    if (
        check is not None
        and isinstance(payload, dict)
        and payload.get("schema_version") == SCHEMA_VERSION
        and "items" in payload
        and check(payload["items"])
    ):
        from_payload({**payload, "items": []}, RecallReply)
        try:
            return RecallReply.model_validate(payload)
        except ValidationError as exc:
            raise from_model_error(RecallReply.contract, exc) from exc
    return from_payload(payload, RecallReply)


@cache
def _reply_items_check() -> Check | None:
    schema = load_schema(RECALL_REPLY, SCHEMA_VERSION)
    return compile_check(schema["properties"]["items"], schema)


def decode_catalogue_entry(data: bytes | None) -> CatalogueEntry:
    """Decode a ``listings.state`` record value (a tombstone is a deleted listing: check first)."""
    return decode(data, CatalogueEntry)


def decode_live_pointer(data: bytes | None) -> LivePointer:
    """Decode the ``live`` record of the control topic."""
    return decode(data, LivePointer)


def decode_rollout_record(data: bytes | None) -> RolloutRecord:
    """Decode the ``rollout`` record of the control topic."""
    return decode(data, RolloutRecord)


def decode_stream_record(data: bytes | None) -> StreamRecord:
    """Decode the ``stream`` record of the control topic."""
    return decode(data, StreamRecord)


def decode_stream_ack(data: bytes | None) -> StreamAck:
    """Decode a ``stream-ack/...`` record of the control topic."""
    return decode(data, StreamAck)
