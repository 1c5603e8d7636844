"""Serving /metrics: off at port 0, a clear error when the port is taken."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from vitrine.errors import MetricsPortInUse
from vitrine.observability import serve_metrics


def test_port_zero_is_off() -> None:
    assert serve_metrics(0) is False


def test_serves_the_registry() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert serve_metrics(port) is True
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"python_info" in response.read()


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortInUse) as info:
            serve_metrics(port)
    assert info.value.reason == "metrics_port_in_use"
    assert str(port) in str(info.value) and "VITRINE_METRICS_PORT" in str(info.value)
