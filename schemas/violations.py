"""Turn jsonschema and pydantic errors into one ContractError with a stable reason and field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import ValidationError as SchemaError
from pydantic import ValidationError as ModelError

from .errors import ContractError, Reason

_KEYWORD_REASONS = {
    "required": Reason.MISSING_FIELD,
    "additionalProperties": Reason.UNKNOWN_FIELD,
    "type": Reason.WRONG_TYPE,
    "maxLength": Reason.TOO_LONG,
    "maxItems": Reason.TOO_LONG,
    "minimum": Reason.OUT_OF_RANGE,
    "maximum": Reason.OUT_OF_RANGE,
    "exclusiveMinimum": Reason.OUT_OF_RANGE,
    "exclusiveMaximum": Reason.OUT_OF_RANGE,
    "minLength": Reason.INVALID_VALUE,
    "minItems": Reason.INVALID_VALUE,
    "pattern": Reason.INVALID_VALUE,
    "enum": Reason.INVALID_VALUE,
    "const": Reason.INVALID_VALUE,
    "format": Reason.INVALID_VALUE,
    "minProperties": Reason.INVALID_VALUE,
    "maxProperties": Reason.INVALID_VALUE,
}

# When a payload breaks several rules, report the most basic one first, so a fix-one-rerun
# loop converges and the reported reason does not depend on jsonschema's traversal order.
_PRIORITY = [
    Reason.MISSING_FIELD,
    Reason.WRONG_TYPE,
    Reason.UNKNOWN_FIELD,
    Reason.TOO_LONG,
    Reason.OUT_OF_RANGE,
    Reason.INVALID_VALUE,
    Reason.SCHEMA_VIOLATION,
]

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def json_path(path: Iterable[str | int]) -> str:
    """``("image_urls", 3)`` -> ``image_urls[3]``; ``("price", "amount")`` -> ``price.amount``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def preview(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of an offending value, safe to put in a message or header."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe(error: SchemaError) -> tuple[Reason, list[str | int], str]:
    """Reason, field path and human detail of one jsonschema error."""
    keyword = str(error.validator)
    expected: Any = error.validator_value
    path: list[str | int] = list(error.absolute_path)
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    reason = _KEYWORD_REASONS.get(keyword, Reason.SCHEMA_VIOLATION)
    if keyword == "required":
        present = instance if isinstance(instance, dict) else {}
        missing = next((name for name in expected if name not in present), "?")
        return reason, [*path, missing], "is required"
    if keyword == "additionalProperties":
        known = set(schema.get("properties", {}))
        extra = sorted(name for name in instance if name not in known)
        name = extra[0] if extra else "?"
        return reason, [*path, name], f"is not a known field (known: {', '.join(sorted(known))})"
    if keyword in ("minProperties", "maxProperties") and set(schema.get("properties", {})) == {
        "listing_id",
        "vector",
        "text",
        "image",
    }:
        return reason, path, "needs exactly one of listing_id, vector, text or image"
    if keyword == "type":
        return reason, path, f"must be of type {expected}, got {_json_type(instance)}"
    if keyword == "maxLength":
        return reason, path, f"is longer than {expected} characters ({len(instance)})"
    if keyword == "maxItems":
        return reason, path, f"has more than {expected} items ({len(instance)})"
    if keyword == "minLength":
        return reason, path, f"must have at least {expected} character(s)"
    if keyword == "minItems":
        return reason, path, f"must have at least {expected} item(s)"
    if keyword in ("minimum", "maximum"):
        sign = ">=" if keyword == "minimum" else "<="
        return reason, path, f"must be {sign} {expected}, got {preview(instance)}"
    if keyword == "pattern":
        return reason, path, f"must match {expected}, got {preview(instance)}"
    if keyword in ("enum", "const"):
        allowed = expected if keyword == "enum" else [expected]
        choices = ", ".join(str(choice) for choice in allowed)
        return reason, path, f"must be one of {choices}, got {preview(instance)}"
    if keyword == "format":
        return reason, path, f"is not a valid {expected}: {preview(instance)}"
    return reason, path, error.message


def _pick(found: Sequence[tuple[Reason, str, str]]) -> tuple[Reason, str, str]:
    return min(found, key=lambda item: (_PRIORITY.index(item[0]), item[1]))


def _with_count(detail: str, total: int) -> str:
    return detail if total == 1 else f"{detail} (and {total - 1} more problem(s))"


def from_schema_errors(contract: str, errors: Sequence[SchemaError]) -> ContractError:
    """One ContractError for the schema errors of one payload (at least one)."""
    described = [(r, json_path(p), d) for r, p, d in map(_describe, errors)]
    reason, field, detail = _pick(described)
    where = f"field {field!r}" if field else "payload"
    message = _with_count(f"{contract}: {where} {detail}", len(described))
    return ContractError(message, reason=reason, field=field or None, contract=contract)


def _model_reason(error_type: str) -> Reason:
    if error_type == "missing":
        return Reason.MISSING_FIELD
    if error_type == "extra_forbidden":
        return Reason.UNKNOWN_FIELD
    if error_type in ("string_too_long", "too_long"):
        return Reason.TOO_LONG
    if error_type.startswith(("greater_than", "less_than")):
        return Reason.OUT_OF_RANGE
    if error_type.endswith(("_type", "_parsing")) and error_type != "string_pattern_mismatch":
        return Reason.WRONG_TYPE
    return Reason.INVALID_VALUE


def from_model_error(contract: str, exc: ModelError) -> ContractError:
    """One ContractError for a pydantic error (rules the JSON Schema cannot state)."""
    described = [
        (
            _model_reason(err["type"]),
            json_path(p for p in err["loc"] if isinstance(p, str | int)),
            str(err["msg"]).removeprefix("Value error, "),
        )
        for err in exc.errors(include_url=False)
    ]
    reason, field, detail = _pick(described)
    where = f"field {field!r}" if field else "payload"
    message = _with_count(f"{contract}: {where}: {detail}", len(described))
    return ContractError(message, reason=reason, field=field or None, contract=contract)
