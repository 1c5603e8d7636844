"""Embedder processes for the crash, soak and broker-kill tests: environment, start, readiness,
paced production and committed progress."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.settings import EmbedderSettings
from tests.streams import scenario


def embedder_env(settings: EmbedderSettings, **overrides: str) -> dict[str, str]:
    """The environment of a ``vitrine embedder`` subprocess serving ``settings``' topics and
    collection, tuned for tests; ``overrides`` are more ``VITRINE_*`` values (without prefix)."""
    values = {
        "KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "MILVUS_URI": settings.milvus_endpoint,
        "MILVUS_COLLECTION": settings.milvus_collection,
        "TOPIC_EVENTS": settings.topic_events,
        "TOPIC_EMBEDDED": settings.topic_embedded,
        "TOPIC_DLQ": settings.topic_dlq,
        "TOPIC_STATE": settings.topic_state,
        "TOPIC_CONTROL": settings.topic_control,
        "TOPIC_PARTITIONS": str(settings.topic_partitions),
        "APP_ID": settings.app_id,
        "MODEL_DIR": str(settings.model_dir),
        "ALLOW_LOOPBACK_IMAGES": "true",
        "METRICS_PORT": "0",
        "BATCH_SIZE": "32",
        "BATCH_WAIT_MS": "20",
        "FETCH_MAX_BYTES": str(settings.fetch_max_bytes),
        "FETCH_ATTEMPTS": "2",
        "FETCH_BACKOFF_S": "0.05",
        "SESSION_TIMEOUT_S": "6",
        "COMMIT_INTERVAL_S": "0.2",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    return {**os.environ, **{f"VITRINE_{k}": v for k, v in values.items()}}


def paced(records: list[Any], rate: float) -> Iterator[Any]:
    """``records`` at about ``rate`` per second."""
    started = time.monotonic()
    for n, record in enumerate(records):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield record


def start_embedder(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A ``vitrine embedder`` process, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "embedder"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_running(metrics_port: int, timeout_s: float) -> bool:
    """True once the embedder's /metrics shows a heartbeat: faust runs, SIGTERM is graceful."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            text = ""
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "vitrine_embedder_heartbeat_timestamp_seconds" and float(value) > 0:
                return True
        time.sleep(0.3)
    return False


def committed_total(settings: EmbedderSettings) -> int:
    """The group's committed offsets, summed over the events topic's partitions."""
    return sum(max(0, o) for o in scenario.committed(settings, settings.topic_partitions).values())
