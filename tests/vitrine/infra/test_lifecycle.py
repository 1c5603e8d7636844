"""`vitrine infra up/status/down` on a home and ports of its own: idempotent, leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitrine.infra.process import find_pids, port_open
from vitrine.settings import InfraSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORTS = {
    "VITRINE_KAFKA_PORT": 29192,
    "VITRINE_KAFKA_CONTROLLER_PORT": 29193,
    "VITRINE_MILVUS_PORT": 29540,
}


def _vitrine(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_up_is_idempotent_and_down_leaves_nothing(
    tmp_path: Path, infra_settings: InfraSettings
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env.update({k: str(v) for k, v in PORTS.items()})
    env["VITRINE_HOME"] = str(tmp_path / "home")
    # Share the download cache so the test needs no network after the first fetch.
    env["VITRINE_CACHE_DIR"] = str(infra_settings.cache)
    try:
        first = _vitrine(env, "infra", "up")
        assert first.returncode == 0, first.stderr
        assert "kafka   started on 127.0.0.1:29192" in first.stdout
        assert "milvus  started on http://127.0.0.1:29540" in first.stdout

        second = _vitrine(env, "infra", "up")
        assert second.returncode == 0, second.stderr
        assert "kafka   running" in second.stdout and "milvus  running" in second.stdout
        assert len(find_pids(str(tmp_path / "home" / "kafka" / "server.properties"))) == 1

        status = _vitrine(env, "infra", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("answering") == 2 and "NOT" not in status.stdout
    finally:
        down = _vitrine(env, "infra", "down")
    assert down.returncode == 0, down.stderr
    assert "kafka   stopped" in down.stdout and "milvus  stopped" in down.stdout
    assert find_pids(str(tmp_path / "home")) == []
    assert not any(port_open("127.0.0.1", port) for port in PORTS.values())

    after = _vitrine(env, "infra", "status")
    assert after.returncode == 1
    assert after.stdout.count("NOT answering") == 2


def test_external_services_are_left_alone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env.update(
        VITRINE_HOME=str(tmp_path),
        VITRINE_KAFKA_BOOTSTRAP="127.0.0.1:1",
        VITRINE_MILVUS_URI="http://127.0.0.1:1",
    )
    up = _vitrine(env, "infra", "up")
    assert up.returncode == 0, up.stderr
    assert "external at 127.0.0.1:1 (not started)" in up.stdout
    assert not (tmp_path / "kafka").exists() and not (tmp_path / "milvus").exists()
