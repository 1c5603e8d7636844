"""Embedder settings: ONNX Runtime threads leave room for image decoding."""

from __future__ import annotations

import os

import pytest

from streams.settings import EmbedderSettings
from vitrine.settings import load


def test_intra_op_threads_default_to_half_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRINE_ORT_INTRA_THREADS", raising=False)
    settings = load(EmbedderSettings)
    assert settings.ort_intra_threads is None
    assert settings.ort_threads == max(1, (os.cpu_count() or 2) // 2)


def test_intra_op_threads_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_ORT_INTRA_THREADS", "3")
    assert load(EmbedderSettings).ort_threads == 3
