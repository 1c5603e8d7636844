"""Serving Prometheus metrics, shared by the embedder and the recall worker."""

from __future__ import annotations

from vitrine.errors import MetricsPortInUse


def serve_metrics(port: int) -> bool:
    """Expose the default Prometheus registry on ``port`` (0 = off); True when serving."""
    if port <= 0:
        return False
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:
        raise MetricsPortInUse(
            f"cannot serve /metrics on port {port} ({exc.strerror}); set VITRINE_METRICS_PORT "
            "to a free port, or 0 to turn metrics off"
        ) from exc
    return True
