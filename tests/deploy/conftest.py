"""Fixtures for the deployment files: Debian's Prometheus tools, installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ensure_debian_package(binary: str, package: str) -> str:
    """Path of ``binary``; installs Debian's ``package`` first when it is missing (as root)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{binary} is missing and cannot be installed here: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=env,
        timeout=600,
    )
    found = shutil.which(binary)
    assert found, f"{package} installed but {binary} is still not on PATH"
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package `prometheus`)."""
    return ensure_debian_package("promtool", "prometheus")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of the Prometheus server (Debian package `prometheus`)."""
    return ensure_debian_package("prometheus", "prometheus")
