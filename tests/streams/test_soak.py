"""Two embedder replicas, SIGKILLed and restarted at random, must still end exact.

Two ``python -m app.cli embedder`` processes share one consumer group. While 10,000 keyed
events (out-of-order versions, duplicates, deletes, re-creates, 1 % poison) are produced, the
test SIGKILLs a random replica 20 times and stops one gracefully 3 times, restarting it each
time: most at a random moment after the group committed something new (mid-stream, with a
backlog while the first fifth of the events waits), every fourth within seconds of the
victim's start (at its first join). Then:

- Milvus holds exactly the newest valid version of every listing, once (nothing stale,
  missing, resurrected or duplicated);
- every poison event is in the dead-letter topic with its reason (a dead letter produced just
  before a kill is produced again by the replay: duplicates are counted, not failed; consumers
  de-duplicate by the ``vitrine.dlq.partition``/``offset`` headers);
- every listing's final state is announced on the embedded topic, and a listing's
  announcements never go back in version;
- the group's committed offsets reach the log end within 60 s of the last kill.

Knobs (environment): ``VITRINE_SOAK_EVENTS`` (10000), ``VITRINE_SOAK_KILLS`` (20),
``VITRINE_SOAK_STOPS`` (3), ``VITRINE_SOAK_SEED`` (7), ``VITRINE_SOAK_RATE`` (events/s after
the initial backlog, 250). docs/embedder.md records runs with other seeds and longer streams.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, produce, read_all
from tests.streams.processes import (
    committed_total,
    embedder_env,
    free_port,
    paced,
    start_embedder,
    wait_running,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("VITRINE_SOAK_EVENTS", "10000"))
KILLS = int(os.environ.get("VITRINE_SOAK_KILLS", "20"))
STOPS = int(os.environ.get("VITRINE_SOAK_STOPS", "3"))
SEED = int(os.environ.get("VITRINE_SOAK_SEED", "7"))
RATE = float(os.environ.get("VITRINE_SOAK_RATE", "250"))
BACKLOG = 0.2  # share of the events produced before any replica starts


class Replica:
    """One embedder process slot: started, killed, stopped and restarted by the test."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "VITRINE_METRICS_PORT": str(self.port)}
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = start_embedder(self.env, self.logs / f"{self.name}-{self.starts}.log")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM once the process runs faust (before that a SIGTERM also exits 0)."""
        assert self.proc is not None
        wait_running(self.port, timeout_s=60)
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(90)


def wait_progress(settings: EmbedderSettings, timeout_s: float) -> None:
    """Until the group's committed offsets move (or nothing is left, or the deadline)."""
    before = committed_total(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ends = sum(scenario.end_offsets(settings, settings.topic_partitions).values())
        now = committed_total(settings)
        if now > before or now >= ends:
            return
        time.sleep(0.3)


def newest_valid(sc: scenario.Scenario) -> dict[str, tuple[int, bool]]:
    """listing_id -> (newest valid version, is it a delete)."""
    newest: dict[str, tuple[int, bool]] = {}
    for _key, value in sc.records:
        if value in sc.poison:
            continue
        event = json.loads(value)
        seen = newest.get(event["listing_id"])
        if seen is None or event["version"] > seen[0]:
            newest[event["listing_id"]] = (event["version"], event["event_type"] == "deleted")
    return newest


def check_announcements(settings: EmbedderSettings, sc: scenario.Scenario) -> Counter[str]:
    """Every listing's final state announced; versions per listing never go back."""
    announced: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for msg in read_all(settings, settings.topic_embedded, timeout_s=120):
        event = json.loads(msg.value())
        announced[event["listing_id"]].append((event["version"], event["outcome"]))
    for listing, history in announced.items():
        versions = [v for v, _ in history]
        assert versions == sorted(versions), f"{listing} announced {versions}"
    for listing, (version, deleted) in newest_valid(sc).items():
        assert announced.get(listing), f"{listing}: nothing announced"
        last_version, last_outcome = announced[listing][-1]
        assert last_version == version, f"{listing}: last announced {last_version}, not {version}"
        assert (last_outcome == "deleted") == deleted, f"{listing}: {last_outcome}"
    repeats: Counter[str] = Counter()
    for history in announced.values():
        repeats["events"] += len(history)
        repeats["repeated"] += len(history) - len(set(history))
    return repeats


def test_two_replicas_killed_and_restarted_end_exact(
    embedder_settings: EmbedderSettings, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = embedder_settings
    sc = scenario.build(
        image_server, total=EVENTS, seed=SEED, cap=settings.fetch_max_bytes, poison_share=0.01
    )
    split = int(len(sc.records) * BACKLOG)
    produce(settings, settings.topic_events, sc.records[:split])  # a backlog at the first join
    feeder = threading.Thread(
        target=lambda: produce(settings, settings.topic_events, paced(sc.records[split:], RATE)),
        daemon=True,
    )
    env = embedder_env(settings)
    replicas = [Replica(f"r{i}", env, tmp_path) for i in range(2)]
    rng = random.Random(SEED)
    actions = ["kill"] * KILLS + ["stop"] * STOPS
    rng.shuffle(actions)
    log: list[str] = []
    started = time.monotonic()
    try:
        for replica in replicas:
            replica.start()
        feeder.start()
        victim = replicas[0]
        for n, action in enumerate(actions):
            if n % 4 == 1:
                # At its first join: hit the replica just restarted within seconds.
                time.sleep(rng.uniform(0.5, 4.0))
            else:
                # Mid-stream: a random moment after the group committed something new.
                victim = rng.choice(replicas)
                wait_progress(settings, timeout_s=30)
                time.sleep(rng.uniform(0.0, 1.5))
            at = time.monotonic() - started
            lag = sum(scenario.end_offsets(settings, 2).values()) - committed_total(settings)
            if action == "kill":
                victim.kill()
            else:
                assert victim.stop() == 0
            log.append(f"{at:.0f}s {action} {victim.name} backlog={lag}")
            time.sleep(rng.uniform(0.0, 2.0))
            victim.start()
        last_kill = time.monotonic()
        feeder.join(600)
        assert not feeder.is_alive()
        # The clock starts at the last kill, or when the last event was produced if later.
        since = max(last_kill, time.monotonic())
        drained = scenario.wait_drained(settings, settings.topic_partitions, timeout_s=240)
        drain_s = time.monotonic() - since
        assert drained, log
        assert drain_s <= 60, (drain_s, log)
        for replica in replicas:
            assert replica.stop() == 0
    finally:
        for replica in replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait(30)
    rows = scenario.milvus_rows(settings)
    ids = Counter(row["listing_id"] for row in rows)
    assert [i for i, n in ids.items() if n > 1] == [], "duplicate rows"
    got = {row["listing_id"]: row["version"] for row in rows}
    stale = {i: (v, sc.final[i]) for i, v in got.items() if i in sc.final and v != sc.final[i]}
    resurrected = sorted(set(got) - set(sc.final))
    missing = sorted(set(sc.final) - set(got))
    assert (stale, resurrected[:10], missing[:10]) == ({}, [], [])
    letters = list(scenario.dead_letters(read_all(settings, settings.topic_dlq, timeout_s=120)))
    unique = {pos: (value, letter.reason) for pos, value, letter in letters}
    assert Counter(unique.values()) == Counter(sc.poison.items())
    repeats = check_announcements(settings, sc)
    print(
        f"events={len(sc.records)} seed={SEED} actions={len(actions)} "
        f"duplicate dead letters={len(letters) - len(unique)} "
        f"embedded events={repeats['events']} repeated={repeats['repeated']} "
        f"drained {drain_s:.0f}s after the last kill, total {time.monotonic() - started:.0f}s"
    )
    print("\n".join(log))
