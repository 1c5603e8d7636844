"""Layers point down: each package imports only the packages below it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> the project packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "vitrine": set(),
    "schemas": {"vitrine"},
    "encoders": {"vitrine"},
    "streams": {"vitrine", "schemas", "encoders"},
    "recall": {"vitrine", "schemas", "encoders"},
    "app": {"vitrine", "schemas", "encoders", "streams", "recall"},
}


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & (set(ALLOWED) | {"tests", "bench"})


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in sorted((ROOT / package).rglob("*.py"))
        if (bad := _imported_packages(path) - ALLOWED[package] - {package})
    }
    assert offenders == {}


def test_the_layer_table_has_no_cycle() -> None:
    seen: set[str] = set()
    while len(seen) < len(ALLOWED):
        ready = {p for p, deps in ALLOWED.items() if p not in seen and deps <= seen}
        assert ready, f"cycle among {set(ALLOWED) - seen}"
        seen |= ready
