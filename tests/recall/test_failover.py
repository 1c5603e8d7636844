"""1,000 concurrent requests from several clients, two worker replicas, one killed mid-run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recall import AsyncRecallClient, RecallTimeout
from schemas import RecallReply, RecallStatus

from .conftest import RecallEnv, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 4
PER_CLIENT = 250
SEND_OVER_S = 4.0  # requests are spread out so that the kill lands mid-run
KILL_AFTER_S = 1.5
TIMEOUT_S = 40.0


def group_members(bootstrap: str, group: str) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        description = admin.describe_consumer_groups([group])[group].result()
    except Exception:
        return 0
    return sum(1 for m in description.members if m.assignment.topic_partitions)


def start_workers(env: RecallEnv, logs: list[Path]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for log in logs:
        with log.open("wb") as out:  # the child keeps its own descriptor
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "--log-level", "WARNING", "recall"],
                    env=worker_env(env.settings),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    n = len(logs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if group_members(env.settings.bootstrap_servers, env.settings.recall_group_id) == n:
            return procs
        assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
        time.sleep(0.2)
    for p in procs:
        p.kill()
        p.wait()
    raise AssertionError(f"{n} workers did not join the group in time")


def test_killed_replica_loses_no_request(recall_env: RecallEnv, tmp_path: Path) -> None:
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = start_workers(recall_env, logs)
    try:
        outcomes, stats = asyncio.run(run_clients(recall_env, workers[0]))
    finally:
        workers[0].kill()
        workers[0].wait()
        workers[1].send_signal(signal.SIGTERM)
        try:
            workers[1].wait(timeout=30)
        except subprocess.TimeoutExpired:
            workers[1].kill()
    assert workers[0].returncode == -signal.SIGKILL
    assert workers[1].returncode == 0, logs[1].read_text()

    total = CLIENTS * PER_CLIENT
    replies = [o for o in outcomes if isinstance(o, RecallReply)]
    timeouts = [o for o in outcomes if isinstance(o, RecallTimeout)]
    others = [o for o in outcomes if not isinstance(o, RecallReply | RecallTimeout)]
    # Exactly one outcome per request: a reply or a timeout, nothing else.
    assert len(outcomes) == total and not others, others[:3]
    assert len(replies) + len(timeouts) == total
    assert all(r.status in {RecallStatus.OK, RecallStatus.EXPIRED} for r in replies)
    # The survivor takes the killed replica's partitions after the session timeout (6 s here),
    # well inside the clients' timeout: a timeout would be a request lost in the failover.
    assert not timeouts, f"{len(timeouts)} requests were never answered"
    for s in stats:
        # No reply reached a caller that did not send it; every pending entry is settled.
        assert (s.unknown, s.mismatched, s.pending) == (0, 0, 0), s
        assert s.replies + s.timeouts == PER_CLIENT, s
    assert sum(s.replies for s in stats) == len(replies)
    print("failover:", len(replies), "replies", len(timeouts), "timeouts", stats)


async def run_clients(env: RecallEnv, victim: subprocess.Popen[bytes]):
    clients = await asyncio.gather(
        *(asyncio.to_thread(AsyncRecallClient, env.settings) for _ in range(CLIENTS))
    )

    async def one(client: AsyncRecallClient, n: int) -> object:
        await asyncio.sleep(SEND_OVER_S * n / PER_CLIENT)
        seed = f"L{(n * 7 + id(client)) % 400:05d}"
        try:
            reply = await client.similar(seed, k=10, timeout=TIMEOUT_S)
        except RecallTimeout as exc:
            return exc
        except Exception as exc:  # reported by the assertions, not raised here
            return exc
        return reply

    async def kill_later() -> None:
        await asyncio.sleep(KILL_AFTER_S)
        victim.send_signal(signal.SIGKILL)

    try:
        results = await asyncio.gather(
            kill_later(), *(one(c, n) for c in clients for n in range(PER_CLIENT))
        )
        await asyncio.sleep(1.0)  # let duplicate replies from the re-read arrive and be counted
        return results[1:], [c.stats for c in clients]
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
