"""A model rollout end to end on the real broker and Milvus: the live embedder (old model) keeps
the catalogue and the live collection fresh, a recall worker answers all the time, the rollout
job fills the candidate (new model), is SIGKILLed half-way and resumes without re-encoding what
it wrote, cutover and rollback move the answers between the two models.

Checked: 0 failed replies; every reply is answered from one collection (its scores are the
cosines of its seed and items in the collection of its model_version); after the cutover every
live listing is in the candidate at its newest version under the new model; cutover is refused
while the candidate is incomplete.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders.manifest import Manifest
from recall import RecallClient
from recall.settings import RecallSettings
from schemas import RecallReply, RecallStatus
from streams.rollout import commands
from streams.rollout.commands import alias_name
from streams.rollout.job import group_id
from streams.rollout.plan import gaps
from streams.rollout.settings import RolloutSettings
from streams.rollout.state import committed_positions, read_catalogue
from streams.settings import EmbedderSettings
from tests.recall.conftest import WorkerThread
from tests.streams import scenario
from tests.streams.harness import ImageServer, encode_json, listing_event, png, produce
from tests.streams.processes import embedder_env, start_embedder
from tests.stub_model import build_stub_model
from vitrine.settings import load
from vitrine.vectorstore import connect

pytestmark = pytest.mark.integration

UPDATED = 200  # listings 0..UPDATED-1 get new versions while the rollout runs


def cover(i: int, version: int) -> bytes:
    return png(((i * 7 + version * 40) % 256, (i // 256 * 13) % 256, (i * 3 + 11) % 256), 24)


@dataclass
class Stream:
    """Listing events: N created, then updates of the first UPDATED listings, paced."""

    settings: EmbedderSettings
    server: ImageServer
    tag: str
    versions: dict[str, int] = field(default_factory=dict)
    paused: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    _sending: threading.Lock = field(default_factory=threading.Lock)

    def event(self, i: int, version: int) -> tuple[bytes, bytes]:
        lid = f"R{i:05d}"
        path = f"/{self.tag}/{i}-{version}.png"
        self.server.images[path] = cover(i, version)
        kind = "created" if version == 1 else "updated"
        title = f"{['red', 'blue', 'green'][version % 3]} car {i % 17}"
        payload = listing_event(lid, version, kind, title=title, image_url=self.server.url(path))
        self.versions[lid] = version
        return lid.encode(), encode_json(payload)

    def create(self, n: int) -> None:
        produce(self.settings, self.settings.topic_events, [self.event(i, 1) for i in range(n)])

    def pause(self) -> None:
        """No update is produced after this returns (one in flight is awaited)."""
        self.paused.set()
        with self._sending:
            pass

    def resume(self) -> None:
        self.paused.clear()

    def updates(self) -> None:
        version, i = 2, 0
        while not self.stop.is_set():
            with self._sending:  # checked and sent under the lock that pause() waits on
                paused = self.paused.is_set()
                if not paused:
                    produce(self.settings, self.settings.topic_events, [self.event(i, version)])
            if paused:
                time.sleep(0.05)
                continue
            self.sent += 1
            i += 1
            if i == UPDATED:
                i, version = 0, version + 1
            time.sleep(0.05)


@dataclass
class Traffic:
    """Recall requests sent one after another; every reply kept."""

    settings: RecallSettings
    seeds: list[str]
    replies: list[tuple[str, RecallReply]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with RecallClient(self.settings) as client:
                n = 0
                while not self.stop.is_set():
                    seed = self.seeds[n % len(self.seeds)]
                    self.replies.append((seed, client.similar(seed, k=10, timeout=30)))
                    n += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def wait_for(self, model: str, timeout_s: float = 60.0) -> int:
        """Index of the first reply labelled ``model`` sent after now."""
        start = len(self.replies)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in range(start, len(self.replies)):
                if self.replies[i][1].model_version == model:
                    return i
            time.sleep(0.05)
        raise AssertionError(f"no reply from model {model} within {timeout_s} s")


def rollout_env(settings: EmbedderSettings, **extra: str) -> dict[str, str]:
    env = embedder_env(settings, ROLLOUT_BATCH_SIZE="64", ROLLOUT_PROGRESS_EVERY_S="0.5")
    env.update({f"VITRINE_{k}": v for k, v in extra.items()})
    return env


def vitrine(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rollout", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "rollout", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def rows_of(settings: Any, collection: str) -> dict[str, dict[str, Any]]:
    """listing -> row (version, model_version, updated_at_ms) of every row of ``collection``."""
    client = connect(settings)
    try:
        rows = client.query_iterator(
            collection,
            batch_size=2000,
            filter="version >= 0",
            output_fields=["listing_id", "version", "model_version", "updated_at_ms"],
        )
        got: dict[str, dict[str, Any]] = {}
        while batch := rows.next():
            got.update({r["listing_id"]: r for r in batch})
        rows.close()
    finally:
        client.close()
    return got


def vectors(settings: Any, collection: str, ids: list[str]) -> dict[str, np.ndarray]:
    client = connect(settings)
    try:
        rows = client.query(collection, ids=ids, output_fields=["listing_id", "embedding"])
    finally:
        client.close()
    return {r["listing_id"]: np.asarray(r["embedding"], np.float64) for r in rows}


def answered_from_one_collection(
    settings: Any, collections: dict[str, str], replies: list[tuple[str, RecallReply]]
) -> list[str]:
    """Replies whose scores are not the cosines of their seed and items in the collection of
    their model_version (only items that were never updated are compared)."""
    wrong = []
    for seed, reply in replies:
        stable = [i for i in reply.items or () if int(i.listing_id[1:]) >= UPDATED]
        found = vectors(
            settings,
            collections[reply.model_version or ""],
            [seed, *(i.listing_id for i in stable)],
        )
        q = found[seed]
        for item in stable:
            v = found[item.listing_id]
            cosine = float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v)))
            if abs(cosine - item.score) > 1e-3:
                wrong.append(f"{seed}->{item.listing_id} {reply.model_version}")
                break
    return wrong


@pytest.fixture
def new_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stub_model(tmp_path_factory.mktemp("model") / "new", seed=1)


@pytest.fixture
def cleanup(embedder_settings: EmbedderSettings) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    client = connect(embedder_settings)
    try:
        with contextlib.suppress(Exception):  # a Milvus server keeps the live alias
            client.drop_alias(alias_name(embedder_settings.milvus_collection))
        for name in client.list_collections():
            if name.startswith(embedder_settings.milvus_collection):
                client.drop_collection(name)
    finally:
        client.close()


def run_rollout(
    settings: EmbedderSettings,
    server: ImageServer,
    new_model: Path,
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
    listings: int,
) -> None:
    stream = Stream(settings, server, tmp_path.name)
    stream.create(listings)
    live_embedder = start_embedder(
        embedder_env(settings, BATCH_SIZE="128"), tmp_path / "embedder.log"
    )
    procs.append(live_embedder)
    assert scenario.wait_drained(settings, settings.topic_partitions, 600), "embedder behind"
    rsettings = load(
        RolloutSettings, **{k: getattr(settings, k) for k in EmbedderSettings.model_fields}
    )
    recall = load(
        RecallSettings,
        kafka_bootstrap=settings.bootstrap_servers,
        milvus_uri=settings.milvus_endpoint,
        milvus_collection=settings.milvus_collection,
        topic_recall_requests=settings.topic_recall_requests,
        topic_recall_replies=settings.topic_recall_replies,
        topic_control=settings.topic_control,
        recall_group_id=f"{settings.app_id}-recall",
        recall_poll_timeout_s=0.1,
        recall_session_timeout_ms=6000,
        metrics_port=0,
    )
    worker = WorkerThread(recall).start()
    traffic = Traffic(recall, [f"R{i:05d}" for i in range(UPDATED, listings, 7)])
    threads = [
        threading.Thread(target=traffic.run, daemon=True),
        threading.Thread(target=stream.updates, daemon=True),
    ]
    for thread in threads:
        thread.start()
    env = rollout_env(settings)
    try:
        traffic.wait_for(Manifest.read(settings.resolved_model_dir).model_version)
        # -- start, then SIGKILL the job half-way through the bulk --------------------------------
        job = spawn(env, tmp_path / "job-1.log", "start", "--model", str(new_model))
        procs.append(job)
        deadline = time.monotonic() + 600
        rollout = None
        while time.monotonic() < deadline:
            rollout = commands.read(rsettings).rollout
            if rollout is not None:
                done = sum(committed_positions(rsettings, group_id(rsettings, rollout)).values())
                if done >= sum(rollout.state_end_offsets) * 0.4:
                    break
            time.sleep(0.05)
        assert rollout is not None, "the rollout was never recorded"
        stream.pause()
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        candidate = rollout.candidate_collection
        refused = vitrine(env, "cutover", "--wait", "0")
        assert refused.returncode == 1 and "candidate_incomplete" in refused.stderr, refused
        # -- restart: only what the candidate does not hold at its version is encoded -----------
        assert scenario.wait_drained(settings, settings.topic_partitions, 300)
        time.sleep(1.0)  # the live embedder's last state records
        before = rows_of(rsettings, candidate)
        held = {lid: row["version"] for lid, row in before.items()}
        left = gaps(read_catalogue(rsettings), held)
        todo = len(left.missing) + len(left.behind)
        assert held and todo, (len(held), todo)  # killed half-way indeed
        resumed = vitrine(env, "run", "--until-caught-up", timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        summary = json.loads(resumed.stdout.strip().splitlines()[-1])
        # Every listing missing or behind is encoded; beyond them only intermediate versions
        # of updated listings that the state still held in order.
        assert todo <= summary["encoded"] <= todo + stream.sent, (summary, todo)
        assert 0 < summary["startup_seconds"] <= summary["seconds"], summary
        # What the candidate held at its newest version was not written (so not encoded) again.
        behind = set(left.behind)
        finished = [lid for lid in held if lid not in behind]
        after = rows_of(rsettings, candidate)
        rewritten = [
            lid for lid in finished if after[lid]["updated_at_ms"] != before[lid]["updated_at_ms"]
        ]
        assert rewritten == []
        assert summary["bulk_done"]
        # -- the job follows the delta; cutover under traffic ------------------------------------
        procs.append(spawn(env, tmp_path / "job-2.log", "run"))
        stream.resume()
        status = json.loads(vitrine(env, "status").stdout)
        assert status["phase"] == "started" and status["bulk_remaining"] == 0, status
        cut = vitrine(env, "cutover", "--wait", "300")
        assert cut.returncode == 0, cut.stderr[-2000:]
        switched = traffic.wait_for(rollout.candidate_model_version)
        time.sleep(2.0)
        stream.pause()
        assert scenario.wait_drained(settings, settings.topic_partitions, 120)
        deadline = time.monotonic() + 60
        while json.loads(vitrine(env, "status").stdout)["behind"] and time.monotonic() < deadline:
            time.sleep(0.5)
        catalogue = read_catalogue(rsettings)
        assert len(catalogue.versions) == listings
        assert catalogue.versions == stream.versions  # every listing at its newest version
        got = rows_of(rsettings, candidate)
        assert {lid: r["version"] for lid, r in got.items()} == stream.versions
        assert {r["model_version"] for r in got.values()} == {rollout.candidate_model_version}
        # -- rollback restores the old collection's answers --------------------------------------
        back = vitrine(env, "rollback")
        assert back.returncode == 0, back.stderr[-2000:]
        traffic.wait_for(rollout.live_model_version)
        time.sleep(1.0)
    finally:
        traffic.stop.set()
        stream.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        worker.stop()
    assert traffic.error is None, traffic.error
    replies = traffic.replies
    failed = [r for _, r in replies if r.status is not RecallStatus.OK]
    assert failed == [], failed[:3]
    models = {rollout.live_model_version, rollout.candidate_model_version}
    assert {r.model_version for _, r in replies} == models
    # One switch at the cutover, one at the rollback, none back and forth.
    labels = [r.model_version for _, r in replies]
    runs = [m for i, m in enumerate(labels) if i == 0 or labels[i - 1] != m]
    old, new = rollout.live_model_version, rollout.candidate_model_version
    assert runs == [old, new, old]
    collections = {
        rollout.live_model_version: rollout.live_collection,
        rollout.candidate_model_version: candidate,
    }
    # Seeds and compared items are listings the stream never updates: their rows are the
    # same now as when the replies were answered.
    sample = replies[:: max(1, len(replies) // 400)] + replies[switched : switched + 20]
    assert answered_from_one_collection(rsettings, collections, sample) == []
    status = json.loads(vitrine(env, "status").stdout)
    assert status["phase"] == "rolled_back" and status["live"] == rollout.live_collection


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "listings", [2000, pytest.param(20_000, marks=pytest.mark.slow)], ids=lambda n: f"{n}"
)
def test_rollout_bulk_kill_resume_cutover_rollback(
    embedder_settings: EmbedderSettings,
    image_server: ImageServer,
    new_model: Path,
    tmp_path: Path,
    cleanup: list[subprocess.Popen[bytes]],
    listings: int,
) -> None:
    run_rollout(embedder_settings, image_server, new_model, tmp_path, cleanup, listings)
