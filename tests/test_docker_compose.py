"""docker-compose.yml cannot be started here (no Docker engine), so check what can be checked:
it parses, every Vitrine service runs a command the CLI accepts with settings that exist, and
every file it mounts or builds from is in the project."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import build_parser
from vitrine.settings import VitrineSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _vitrine_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _settings_fields(service: str) -> set[str]:
    """Fields of the settings class the service's command loads."""
    from app.explorer.settings import ExplorerSettings
    from encoders.settings import ModelSettings
    from recall.settings import RecallSettings
    from streams.settings import EmbedderSettings
    from vitrine.settings import InfraSettings

    by_service: dict[str, type[VitrineSettings]] = {
        "embedder": EmbedderSettings,
        "embedder-gpu": EmbedderSettings,
        "recall": RecallSettings,
        "topics": InfraSettings,
        "model": ModelSettings,
        "explorer": ExplorerSettings,
    }
    fields = set(by_service[service].model_fields)
    if service == "explorer":  # it fetches covers under the embedder's fetch settings
        fields |= set(EmbedderSettings.model_fields)
    return fields


def test_every_service_has_an_image(compose: dict[str, Any]) -> None:
    expected = {"kafka", "milvus", "etcd", "minio", "prometheus", "grafana", "embedder", "recall"}
    assert expected <= set(compose["services"])
    for name, svc in compose["services"].items():
        assert svc.get("image") or svc.get("build"), name


def test_vitrine_services_build_from_the_project(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE):
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    for name, svc in _vitrine_services(compose).items():
        assert (ROOT / svc["build"]["context"] / "Dockerfile").is_file(), name


def test_vitrine_commands_parse(compose: dict[str, Any]) -> None:
    services = _vitrine_services(compose)
    assert {"embedder", "recall", "topics", "model"} <= set(services)
    for name, svc in services.items():
        parser = build_parser()
        try:
            args = parser.parse_args(svc["command"])
        except SystemExit as exc:  # argparse exits on an unknown command or flag
            pytest.fail(f"service {name}: `vitrine {' '.join(svc['command'])}` rejected ({exc})")
        assert callable(args.func), name


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    for name, svc in _vitrine_services(compose).items():
        fields = _settings_fields(name)
        for variable in svc.get("environment", {}):
            if variable.startswith("VITRINE_"):
                field = variable.removeprefix("VITRINE_").lower()
                assert field in fields, f"service {name}: {variable} is not a setting"


def test_mounted_project_files_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"service {name} mounts missing {source}"


def test_gpu_embedder_reserves_an_nvidia_device(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["embedder-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"


def test_prometheus_scrapes_both_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    embedder_port = compose["services"]["embedder"]["environment"]["VITRINE_METRICS_PORT"]
    recall_port = compose["services"]["recall"]["environment"]["VITRINE_METRICS_PORT"]
    assert {f"embedder:{embedder_port}", f"recall:{recall_port}"} <= targets
