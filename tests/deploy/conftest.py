"""Paths for the deployment-file tests (Debian's Prometheus fixtures live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
