"""SIGKILL the embedder process at random moments; the end state must still be exact.

A dead letter may be written twice when the process dies after producing it and before its
offset is committed; the assertion de-duplicates dead letters by their (partition, offset)
headers, as consumers of the dead-letter topic should (docs/embedder.md).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, produce
from tests.streams.processes import (
    committed_total,
    embedder_env,
    free_port,
    paced,
    start_embedder,
    wait_running,
)
from tests.streams.test_embedder import check_outcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigkill_five_times_then_exact(
    embedder_settings: EmbedderSettings, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = embedder_settings
    sc = scenario.build(image_server, total=2000, seed=23, cap=settings.fetch_max_bytes)
    # Events arrive over ~30 s while the embedder is killed and restarted.
    feeder = threading.Thread(
        target=lambda: produce(settings, settings.topic_events, paced(sc.records, 70.0)),
        daemon=True,
    )
    feeder.start()
    env = embedder_env(settings)
    rng = random.Random(5)
    kills = 0
    progress = []
    while kills < 5:
        before = committed_total(settings)
        proc = start_embedder(env, tmp_path / f"embedder-{kills}.log")
        if rng.random() < 0.2:
            time.sleep(rng.uniform(1.0, 5.0))  # while starting, joining or restoring the table
        else:
            # Mid-stream: a random moment after this incarnation's first commit.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and committed_total(settings) == before:
                if before == sum(scenario.end_offsets(settings, 2).values()):
                    break  # nothing left to do
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        progress.append(committed_total(settings))
    feeder.join(120)
    metrics_port = free_port()
    final_env = {**env, "VITRINE_METRICS_PORT": str(metrics_port)}
    proc = start_embedder(final_env, tmp_path / "embedder-final.log")
    try:
        assert scenario.wait_drained(settings, settings.topic_partitions, timeout_s=150), progress
        # The last kill may have come after everything was committed: make sure this process
        # is running before asking it to stop.
        assert wait_running(metrics_port, timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    duplicates = check_outcome(settings, sc)
    print(f"kills={kills} committed after each kill={progress} duplicate dead letters={duplicates}")
