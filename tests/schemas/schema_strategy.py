"""Generate instances straight from a JSON Schema file, for the keywords our contracts use.

hypothesis-jsonschema would do this, but its last release no longer runs against current
Hypothesis; the subset below is small, and it refuses any keyword it does not know, so a
schema that grows a new keyword fails loudly here instead of being tested partially.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_KNOWN = _ANNOTATIONS | {
    "$ref", "type", "enum", "const", "properties", "required", "additionalProperties",
    "minProperties", "maxProperties", "items", "minItems", "maxItems", "pattern", "minLength",
    "maxLength", "format", "minimum", "maximum", "if", "then", "else", "allOf",
}  # fmt: skip

# Unknown fields a tolerant reader must ignore; none collides with a real field name.
_EXTRA_NAMES = st.sampled_from(["x_trace", "producer", "note", "_ts"])
_JSON_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)


class SchemaStrategies:
    """Strategies for one schema document (local ``#/$defs/...`` references only)."""

    def __init__(self, root: dict[str, Any], formats: dict[str, st.SearchStrategy[str]]):
        self.root = root
        self.formats = formats

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/$defs/"), ref
            merged = {k: v for k, v in node.items() if k != "$ref"}
            node = {**self.root["$defs"][ref.removeprefix("#/$defs/")], **merged}
        return node

    def strategy(self, node: dict[str, Any]) -> st.SearchStrategy[Any]:
        """A strategy for instances valid under ``node``."""
        node = self._resolve(node)
        unknown = set(node) - _KNOWN
        assert not unknown, f"schema_strategy does not support {sorted(unknown)}"
        if "enum" in node:
            return st.sampled_from(node["enum"])
        if "const" in node:
            return st.just(node["const"])
        kind = node["type"]
        if kind == "object":
            return self._object(node)
        if kind == "array":
            return st.lists(
                self.strategy(node.get("items", {})),
                min_size=node.get("minItems", 0),
                max_size=min(node.get("maxItems", 5), 5),
            )
        if kind == "string":
            return self._string(node)
        if kind == "integer":
            return st.integers(node.get("minimum"), node.get("maximum"))
        if kind == "number":
            return st.floats(
                node.get("minimum"), node.get("maximum"), allow_nan=False, allow_infinity=False
            ) | st.integers(
                int(node.get("minimum", -(10**6))), int(min(node.get("maximum", 10**6), 10**6))
            )
        raise AssertionError(f"unsupported type {kind!r}")

    def _string(self, node: dict[str, Any]) -> st.SearchStrategy[str]:
        low, high = node.get("minLength", 0), node.get("maxLength")
        if "format" in node:
            base = self.formats[node["format"]]
        elif "pattern" in node:
            base = st.from_regex(node["pattern"].removesuffix("$") + r"\Z")
        else:
            return st.text(min_size=low, max_size=min(high or 40, 40))
        return base.filter(lambda s: low <= len(s) <= (high or len(s)))

    @st.composite
    def _draw_object(draw: st.DrawFn, self: SchemaStrategies, node: dict[str, Any]) -> Any:
        props: dict[str, Any] = node.get("properties", {})
        required = set(node.get("required", ()))
        lo, hi = node.get("minProperties", 0), node.get("maxProperties", len(props))
        optional = [name for name in props if name not in required]
        chosen = set(required) | set(draw(st.lists(st.sampled_from(optional), unique=True))
                                      if optional else [])  # fmt: skip
        while len(chosen) < lo:
            chosen.add(draw(st.sampled_from(optional)))
        if len(chosen) > hi:
            chosen = set(sorted(chosen)[:hi])
        out = {name: draw(self.strategy(props[name])) for name in sorted(chosen)}
        # Conditional requirements: a top-level if/then/else, or an allOf of them.
        for rule in [node, *node.get("allOf", ())]:
            assert rule is node or set(rule) <= {"if", "then", "else"}, rule
            if "if" not in rule:
                continue
            condition = self._resolve(rule["if"])
            holds = all(name in out for name in condition.get("required", ())) and all(
                name not in out or _matches(out[name], self._resolve(sub))
                for name, sub in condition.get("properties", {}).items()
            )
            branch = rule.get("then" if holds else "else", {})
            assert set(branch) <= {"required"}, branch
            for name in branch.get("required", ()):
                if name not in out:
                    out[name] = draw(self.strategy(props[name]))
        extra = node.get("additionalProperties", True)
        if extra is not False and draw(st.booleans()):
            values = _JSON_SCALARS if extra is True else self.strategy(extra)
            out.setdefault(draw(_EXTRA_NAMES), draw(values))
        return out

    def _object(self, node: dict[str, Any]) -> st.SearchStrategy[Any]:
        return SchemaStrategies._draw_object(self, node)


def _matches(value: Any, node: dict[str, Any]) -> bool:
    if "enum" in node:
        return value in node["enum"]
    if "const" in node:
        return bool(value == node["const"])
    raise AssertionError(f"if-conditions may only use enum/const, got {node}")
