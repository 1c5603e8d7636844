"""Model settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders.settings import ModelSettings
from vitrine.errors import ConfigError
from vitrine.settings import load


def test_model_dir_defaults_under_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path))
    monkeypatch.delenv("VITRINE_MODEL_DIR", raising=False)
    assert load(ModelSettings).resolved_model_dir == tmp_path / "models" / "cpu"


def test_providers_and_threads_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("VITRINE_ORT_PROVIDERS", '["CUDAExecutionProvider", "CPUExecutionProvider"]')
    monkeypatch.setenv("VITRINE_ORT_INTRA_THREADS", "2")
    settings = load(ModelSettings)
    assert settings.ort_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.ort_intra_threads == 2


def test_bad_provider_name_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("VITRINE_ORT_PROVIDERS", '["cuda"]')
    with pytest.raises(ConfigError, match="VITRINE_ORT_PROVIDERS"):
        load(ModelSettings)
