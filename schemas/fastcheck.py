"""A compiled accept-check for simple parts of a JSON Schema, to skip jsonschema's slow walk.

jsonschema spends ~1.5 ms of Python on the ten items of a recall reply, more than the rest of a
recall round trip on the client. :func:`compile_check` turns a schema made only of the keywords
in :data:`KEYWORDS` into a plain predicate. It is one-sided: True means the schema accepts the
instance; False only means "ask the full validator", which then decides and names the
violation. So a reader using it accepts and rejects exactly what the schema does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .registry import strict_regex

Check = Callable[[Any], bool]

#: Keywords a compiled check understands; a schema with any other one is not compiled.
KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "items",
        "maxItems",
        "pattern",
        "maxLength",
        "minimum",
        "maximum",
        "description",
    }
)

# Only the types json.loads produces; anything else (bool for a number, 1.0 for an integer)
# is left to the full validator.
_TYPES: dict[str, Check] = {
    "object": lambda x: type(x) is dict,
    "array": lambda x: type(x) is list,
    "string": lambda x: type(x) is str,
    "number": lambda x: type(x) is int or type(x) is float,
    "integer": lambda x: type(x) is int,
    "boolean": lambda x: type(x) is bool,
    "null": lambda x: x is None,
}


def compile_check(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Check | None:
    """A predicate true only for instances ``schema`` accepts (``$ref`` resolved against
    ``root``'s ``$defs``), or None when ``schema`` uses a keyword outside :data:`KEYWORDS`."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if set(schema) - {"$ref", "description"} or not isinstance(ref, str):
            return None
        prefix = "#/$defs/"
        target = root.get("$defs", {}).get(ref[len(prefix) :]) if ref.startswith(prefix) else None
        return None if not isinstance(target, Mapping) else compile_check(target, root)
    if set(schema) - KEYWORDS:
        return None
    checks: list[Check] = []
    if "type" in schema:
        test = _TYPES.get(schema["type"]) if isinstance(schema["type"], str) else None
        if test is None:
            return None
        checks.append(test)
    if "required" in schema:
        required = tuple(schema["required"])
        checks.append(lambda x: type(x) is not dict or all(k in x for k in required))
    if "properties" in schema:
        parts: list[tuple[str, Check]] = []
        for name, sub in schema["properties"].items():
            compiled = compile_check(sub, root)
            if compiled is None:
                return None
            parts.append((name, compiled))
        checks.append(lambda x: type(x) is not dict or all(n not in x or c(x[n]) for n, c in parts))
    if "items" in schema:
        item = compile_check(schema["items"], root)
        if item is None:
            return None
        checks.append(lambda x: type(x) is not list or all(item(v) for v in x))
    if "maxItems" in schema:
        most = schema["maxItems"]
        checks.append(lambda x: type(x) is not list or len(x) <= most)
    if "pattern" in schema:
        regex = strict_regex(schema["pattern"])
        checks.append(lambda x: type(x) is not str or regex.search(x) is not None)
    if "maxLength" in schema:
        longest = schema["maxLength"]
        checks.append(lambda x: type(x) is not str or len(x) <= longest)
    if "minimum" in schema:
        low = schema["minimum"]
        checks.append(lambda x: not _TYPES["number"](x) or x >= low)
    if "maximum" in schema:
        high = schema["maximum"]
        checks.append(lambda x: not _TYPES["number"](x) or x <= high)
    # A value of a type no keyword constrains passes those keywords, as in JSON Schema; the
    # "type" check (when given) comes first and rejects it.
    return lambda x: all(check(x) for check in checks)
