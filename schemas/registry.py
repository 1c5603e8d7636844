"""Where the JSON Schema files live, and their compiled validators (built once, cached)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

#: The schema_version every contract is written with today.
SCHEMA_VERSION = 1

LISTING_EVENT = "listing_event"
EMBEDDED_EVENT = "embedded_event"
RECALL_REQUEST = "recall_request"
RECALL_REPLY = "recall_reply"
DEAD_LETTER_HEADERS = "dead_letter_headers"
CATALOGUE_ENTRY = "catalogue_entry"
LIVE_POINTER = "live_pointer"
ROLLOUT_RECORD = "rollout_record"
STREAM_RECORD = "stream_record"
STREAM_ACK = "stream_ack"

#: Versions a reader of this code accepts, per contract. During a migration to version N+1
#: readers list both N and N+1 (and upgrade N payloads before building the model).
SUPPORTED_VERSIONS: dict[str, tuple[int, ...]] = {
    LISTING_EVENT: (1,),
    EMBEDDED_EVENT: (1,),
    RECALL_REQUEST: (1,),
    RECALL_REPLY: (1,),
    DEAD_LETTER_HEADERS: (1,),
    CATALOGUE_ENTRY: (1,),
    LIVE_POINTER: (1,),
    ROLLOUT_RECORD: (1,),
    STREAM_RECORD: (1,),
    STREAM_ACK: (1,),
}
CONTRACTS: tuple[str, ...] = tuple(SUPPORTED_VERSIONS)


def schema_file_name(name: str, version: int = SCHEMA_VERSION) -> str:
    """File name of one contract version inside ``schemas/json``."""
    return f"{name}.v{version}.json"


@cache
def _load(name: str, version: int) -> dict[str, Any]:
    if name not in SUPPORTED_VERSIONS:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}")
    text = resources.files(__package__).joinpath("json", schema_file_name(name, version))
    loaded: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return loaded


def load_schema(name: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Return (a copy of) the JSON Schema of contract ``name`` at ``version``."""
    return copy.deepcopy(_load(name, version))


@cache
def strict_regex(pattern: str) -> re.Pattern[str]:
    """Compile a schema pattern with ECMA-262 end-of-string semantics for a final ``$``."""
    # Python's `$` also matches before a trailing newline; ECMA-262 (what JSON Schema means)
    # and pydantic's Rust regex do not. Anchor at the true end so "id\n" is rejected here too.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not strict_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    # The schema's pattern fixes the shape; this rejects impossible dates (Feb 30) and leap
    # seconds, which Python and most consumers cannot represent.
    if not isinstance(instance, str):
        return True
    datetime.fromisoformat(instance)
    return True


_ContractValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


_ANNOTATIONS = frozenset({"description", "title", "$comment"})


def inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every ``{"$ref": "#/$defs/x"}`` replaced by ``x`` itself (pure).

    Same verdicts and the same error keywords and instance paths, but jsonschema no longer
    resolves a reference per field per payload, which was most of its cost on the embedder's
    event loop. A recursive definition, or a ``$ref`` next to other constraints, stays a
    reference; ``$defs`` stays in place for those.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if (
            isinstance(ref, str)
            and ref.startswith("#/$defs/")
            and set(node) - {"$ref"} <= _ANNOTATIONS
        ):
            target = ref.removeprefix("#/$defs/")
            if target in defs and "/" not in target and target not in stack:
                inlined = walk(defs[target], (*stack, target))
                return {**inlined, **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: (v if k == "$defs" else walk(v, stack)) for k, v in node.items()}

    inlined: dict[str, Any] = walk(schema, ())
    return inlined


@cache
def validator_for(name: str, version: int = SCHEMA_VERSION) -> Validator:
    """The compiled validator of one contract version (format checks on, strict anchors)."""
    schema = _load(name, version)
    Draft202012Validator.check_schema(schema)
    return _ContractValidator(inline_local_refs(schema), format_checker=FORMAT_CHECKER)
