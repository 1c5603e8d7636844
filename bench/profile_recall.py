"""Where a recall round trip's time goes: per-stage timings of one worker at a fixed rate.

Against an existing collection (e.g. one built by ``bench/preload.py``), in one run:

  1. the worker's own Milvus search (``MilvusIndex.search``, same parameters and fields),
     called sequentially with nq = 1, 2, 4, 8 query vectors;
  2. a recall worker in a child process, instrumented (no change to its code: its methods are
     wrapped), answering an open-loop stream of vector requests from ``AsyncRecallClient``.

For each request it reports, in ms: hop_in (client produce -> worker read, from the record's
CreateTime), wait_answer (read -> answering starts), answer (decode, search, reply built and
produced), reply_hop (produced -> the client's reply thread has it), resolve (-> the awaiting
coroutine has it: decode, hand-over to the event loop), offsets (produced -> acknowledged and
its offset stored), and the round trip; per batch: requests read together, search calls' nq;
and the CPU each process used per request.

  python bench/profile_recall.py --collection prof100k --rate 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    return {
        "n": len(a),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "mean": round(float(a.mean()), 2),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_ids(home: Path, child: int) -> dict[str, int]:
    """The processes whose CPU the run accounts for: Milvus server, brokers, worker, this."""
    pids = {"worker": child, "client (this)": os.getpid()}
    for name, pattern in (("milvus", "milvus*/milvus.pid"), ("kafka", "kafka/**/*.pid")):
        for i, pid_file in enumerate(sorted(home.glob(pattern))):
            try:
                pids[f"{name}{i or ''}"] = int(pid_file.read_text().split()[0])
            except (OSError, ValueError):
                continue
    return {k: v for k, v in pids.items() if Path(f"/proc/{v}").exists()}


def worker_child(overrides: dict[str, Any], out_path: str, ready: Any, stop: Any) -> None:
    """Run an instrumented RecallWorker until ``stop`` is set; write its timings as JSON."""
    import threading

    from recall.index import MilvusIndex
    from recall.settings import RecallSettings
    from recall.worker import RecallWorker, open_index
    from vitrine.settings import load

    settings = load(RecallSettings, **overrides)
    index = open_index(settings, wait_s=30)
    worker = RecallWorker(settings, index)
    per_request: dict[bytes, dict[str, float]] = {}
    batches: list[dict[str, float]] = []
    searches: list[tuple[int, float]] = []

    def cid(message: Any) -> bytes:
        for name, value in message.headers() or ():
            if name == "kafka_correlationId":
                return bytes(value)
        return b""

    original_start = worker._start
    original_answer = worker._answer
    original_complete = worker._complete
    original_search = MilvusIndex.search

    def start(messages: Any, pool: Any) -> Any:
        now = time.time()
        for m in messages:
            if m.error() is None:
                per_request[cid(m)] = {"created": m.timestamp()[1] / 1000, "read": now}
        batches.append({"size": len(messages), "at": now})
        return original_start(messages, pool)

    def answer(records: list[Any], started: float) -> Any:
        began = time.time()
        out = original_answer(records, started)
        ended = time.time()
        for m in records:
            entry = per_request.get(cid(m))
            if entry is not None:
                entry["answer_begin"], entry["answer_end"] = began, ended
        return out

    def complete(in_flight: Any) -> None:
        records = in_flight[0].records if in_flight else []
        began = time.time()
        original_complete(in_flight)
        ended = time.time()
        for m in records:
            entry = per_request.get(cid(m))
            if entry is not None:
                entry["complete_begin"], entry["complete_end"] = began, ended

    def search(self: Any, vectors: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original_search(self, vectors, *args, **kwargs)
        finally:
            searches.append((len(vectors), time.perf_counter() - began))

    worker._start = start  # type: ignore[method-assign]
    worker._answer = answer  # type: ignore[method-assign]
    worker._complete = complete  # type: ignore[method-assign]
    MilvusIndex.search = search  # type: ignore[method-assign]
    threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True).start()
    ready.set()
    try:
        worker.run()
    finally:
        worker.close()
    Path(out_path).write_text(
        json.dumps(
            {
                "per_request": {k.hex(): v for k, v in per_request.items()},
                "batches": batches,
                "searches": searches,
            }
        )
    )


async def load_phase(
    settings: Any, queries: np.ndarray, rate: float, duration: float
) -> tuple[list[dict], dict[str, float]]:
    """Open-loop vector requests; per request its round trip, the worker's took_seconds and
    (by correlation id, hex) when the client's reply thread got the reply."""
    from recall import AsyncRecallClient

    client = await asyncio.to_thread(AsyncRecallClient, settings)
    router = client._router
    cids: dict[str, str] = {}
    received: dict[str, float] = {}
    original_submit, original_on_reply = router.submit, router._on_reply

    def submit(request: Any, key: Any) -> Any:
        correlation_id, future = original_submit(request, key)
        cids[request.request_id] = correlation_id.hex()
        return correlation_id, future

    def on_reply(message: Any) -> None:
        for name, value in message.headers() or ():
            if name == "kafka_correlationId":
                received[bytes(value).hex()] = time.time()
        original_on_reply(message)

    router.submit = submit  # type: ignore[method-assign]
    router._on_reply = on_reply  # type: ignore[method-assign]
    records: list[dict] = []

    async def one(i: int) -> None:
        began = time.time()
        reply = await client.similar_to_vector(queries[i % len(queries)].tolist(), k=10, timeout=10)
        done = time.time()
        cid = cids.get(str(reply.request_id), "")
        records.append({"cid": cid, "rtt": done - began, "took": reply.took_seconds, "done": done})

    try:
        for _ in range(20):
            await client.similar_to_vector(queries[0].tolist(), k=10, timeout=60)
        records.clear()
        tasks = []
        t0 = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    return records, received


def main(argv: list[str] | None = None) -> int:
    from preload_helpers import centres, clustered  # type: ignore[import-not-found]

    from recall.index import MilvusIndex
    from recall.settings import RecallSettings
    from vitrine.settings import InfraSettings, load
    from vitrine.topics import TopicSpec, admin_client, ensure_topics
    from vitrine.vectorstore import connect

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--sequential", type=int, default=200, help="searches per nq")
    parser.add_argument("--set", action="append", default=[], help="worker setting k=v")
    args = parser.parse_args(argv)

    infra = load(InfraSettings)
    tag = uuid.uuid4().hex[:8]
    overrides: dict[str, Any] = {
        "milvus_collection": args.collection,
        "topic_recall_requests": f"prof.recall.{tag}.requests",
        "topic_recall_replies": f"prof.recall.{tag}.replies",
        "recall_group_id": f"prof.recall.{tag}",
        "metrics_port": 0,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value
    settings = load(RecallSettings, **overrides)
    queries = clustered(np.random.default_rng(7), centres(args.dim), 4096)

    client = connect(settings)
    index = MilvusIndex.open(client, args.collection, consistency_level="Bounded")
    sequential = {}
    for nq in (1, 2, 4, 8):
        took = []
        for i in range(args.sequential):
            vectors = [queries[(i * nq + j) % len(queries)].tolist() for j in range(nq)]
            began = time.perf_counter()
            index.search(vectors, "", 10)
            took.append(time.perf_counter() - began)
        sequential[f"nq{nq}"] = _ms(took[10:])
    client.close()
    print("sequential MilvusIndex.search:", json.dumps(sequential))

    ensure_topics(
        infra,
        [
            TopicSpec(overrides["topic_recall_requests"], 4, infra.topic_replication, {}),
            TopicSpec(overrides["topic_recall_replies"], 1, infra.topic_replication, {}),
        ],
    )
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    out_path = os.path.join(tempfile.mkdtemp(), "worker.json")
    child = ctx.Process(target=worker_child, args=(overrides, out_path, ready, stop))
    child.start()
    try:
        ready.wait(60)
        pids = process_ids(infra.home, child.pid or 0)
        cpu_before = {k: cpu_seconds(v) for k, v in pids.items()}
        wall_before = time.monotonic()
        records, received = asyncio.run(load_phase(settings, queries, args.rate, args.duration))
        wall = time.monotonic() - wall_before
        cpu_used = {k: cpu_seconds(v) - cpu_before[k] for k, v in pids.items()}
    finally:
        stop.set()
        child.join(60)
        admin = admin_client(infra)
        for future in admin.delete_topics(
            [overrides["topic_recall_requests"], overrides["topic_recall_replies"]]
        ).values():
            future.result()
    data = json.loads(Path(out_path).read_text())
    per = data["per_request"]
    stages: dict[str, list[float]] = {
        k: [] for k in ("hop_in", "wait_answer", "answer", "reply_hop", "resolve", "offsets")
    }
    done_at = {r["cid"]: r["done"] for r in records}
    for cid, entry in per.items():
        if "complete_end" not in entry or "answer_begin" not in entry:
            continue
        stages["hop_in"].append(entry["read"] - entry["created"])
        stages["wait_answer"].append(entry["answer_begin"] - entry["read"])
        stages["answer"].append(entry["answer_end"] - entry["answer_begin"])
        # Replies leave at the answer's end; offsets are stored once they are acknowledged.
        stages["offsets"].append(entry["complete_end"] - entry["answer_end"])
        if cid in received and cid in done_at:
            stages["reply_hop"].append(received[cid] - entry["answer_end"])
            stages["resolve"].append(done_at[cid] - received[cid])
    stages["rtt"] = [r["rtt"] for r in records]
    stages["took (worker read->answered)"] = [r["took"] for r in records]
    stages["rtt - took"] = [r["rtt"] - r["took"] for r in records]
    for name, values in stages.items():
        print(f"{name:30} {_ms(values)}")
    sizes = [b["size"] for b in data["batches"]]
    nqs = [s[0] for s in data["searches"]]
    print(f"batches read: {len(sizes)}, size mean {np.mean(sizes):.2f} max {max(sizes)}")
    print(f"search calls: {len(nqs)}, nq mean {np.mean(nqs):.2f} max {max(nqs)}")
    for low, high in ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 10_000)):
        took = [s[1] for s in data["searches"] if low <= s[0] <= high]
        if took:
            print(f"  nq {low}-{high}: {_ms(took)}")
    answered = len(records)
    print(
        "CPU per request (ms), load phase: "
        + ", ".join(f"{k} {v / answered * 1000:.2f}" for k, v in cpu_used.items())
        + f"; total {sum(cpu_used.values()) / wall:.2f} cores busy over {wall:.1f} s"
    )
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(_HERE))
    import importlib.util

    _spec = importlib.util.spec_from_file_location("preload_helpers", _HERE / "preload.py")
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["preload_helpers"] = _module
    _spec.loader.exec_module(_module)
    sys.path.remove(str(_HERE))
    sys.exit(main())
