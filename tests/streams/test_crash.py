"""SIGKILL the embedder process at random moments; the end state must still be exact.

A dead letter may be written twice when the process dies after producing it and before its
offset is committed; the assertion de-duplicates dead letters by their (partition, offset)
headers, as consumers of the dead-letter topic should (docs/embedder.md).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, produce
from tests.streams.test_embedder import check_outcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(settings: EmbedderSettings) -> dict[str, str]:
    env = dict(os.environ)
    values = {
        "KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "MILVUS_URI": settings.milvus_endpoint,
        "MILVUS_COLLECTION": settings.milvus_collection,
        "TOPIC_EVENTS": settings.topic_events,
        "TOPIC_EMBEDDED": settings.topic_embedded,
        "TOPIC_DLQ": settings.topic_dlq,
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
    }
    env.update({f"VITRINE_{k}": v for k, v in values.items()})
    return env


def _paced(records: list[Any], rate: float) -> Iterator[Any]:
    started = time.monotonic()
    for n, record in enumerate(records):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield record


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "embedder"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_running(metrics_port: int, timeout_s: float) -> bool:
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


def _committed_total(settings: EmbedderSettings) -> int:
    return sum(max(0, o) for o in scenario.committed(settings, settings.topic_partitions).values())


def test_sigkill_five_times_then_exact(
    embedder_settings: EmbedderSettings, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = embedder_settings
    sc = scenario.build(image_server, total=2000, seed=23, cap=settings.fetch_max_bytes)
    # Events arrive over ~30 s while the embedder is killed and restarted.
    feeder = threading.Thread(
        target=lambda: produce(settings, settings.topic_events, _paced(sc.records, 70.0)),
        daemon=True,
    )
    feeder.start()
    env = _env(settings)
    rng = random.Random(5)
    kills = 0
    progress = []
    while kills < 5:
        before = _committed_total(settings)
        proc = _start(env, tmp_path / f"embedder-{kills}.log")
        if rng.random() < 0.2:
            time.sleep(rng.uniform(1.0, 5.0))  # while starting, joining or restoring the table
        else:
            # Mid-stream: a random moment after this incarnation's first commit.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _committed_total(settings) == before:
                if before == sum(scenario.end_offsets(settings, 2).values()):
                    break  # nothing left to do
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        progress.append(_committed_total(settings))
    feeder.join(120)
    metrics_port = _free_port()
    final_env = {**env, "VITRINE_METRICS_PORT": str(metrics_port)}
    proc = _start(final_env, tmp_path / "embedder-final.log")
    try:
        assert scenario.wait_drained(settings, settings.topic_partitions, timeout_s=150), progress
        # The last kill may have come after everything was committed: make sure this process
        # is running before asking it to stop.
        assert _wait_running(metrics_port, timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    duplicates = check_outcome(settings, sc)
    print(f"kills={kills} committed after each kill={progress} duplicate dead letters={duplicates}")
