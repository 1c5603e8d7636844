"""Recall round trip over Kafka vs a direct Milvus search, at a fixed request rate, on both
Milvus kinds side by side in one run.

For each kind (milvus-lite and Milvus standalone; the one not configured is started privately
under VITRINE_HOME/bench-<kind> on VITRINE_MILVUS_PORT+20 and stopped at the end) it builds a
dedicated collection of N random listings (default 100k, 256-d, clustered) with the index the
project uses there (lite: FLAT, IVF_FLAT once large; server: HNSW), waits until the index is
built and loaded, measures the index's recall@10 against exact search (numpy), starts one
`vitrine recall` worker subprocess on
two dedicated topics, then runs the same queries at the same fixed rate, open loop (latency
counted from each request's scheduled send time, so a stall is not hidden by sending less):

  1. direct: the query vector searched with the worker's own search code
     (`recall.index.MilvusIndex`, its consistency: Bounded) from 8 threads;
  2. recall: RecallClient.similar_to_vector over Kafka from the same 8-thread load generator
     (request topic -> worker -> the same Milvus search -> reply topic), then the same with
     AsyncRecallClient on one event loop (`--client`).

Before timing, it waits until the Milvus process is idle (a server compacts and indexes for a
while after a bulk insert), and each phase starts with --warmup seconds of uncounted traffic;
--kafka-warmup seconds of uncounted round trips come before the first recall phase of each kind
(a broker started a moment ago used 2-3 times its later CPU per request in its first timed
phase, with tails to match: its JIT compiling, most likely).
The asyncio sender's timer wakes up 0.5-1 ms late (epoll waits in whole milliseconds), and that
lag is inside its latencies; the threaded one is late by ~0.1 ms, as the direct phase's.

Prints p50/p90/p99 per phase, timeouts, the Kafka overhead (recall p50 - direct p50), the
sender's own lag behind the schedule and the CPU each process (Milvus, broker, worker, this
client) used per request.
Everything it creates is dropped at the end (unless --keep).

  python bench/bench_recall.py --items 100000 --rate 200 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# This file is named like the package it measures: drop its own folder from the import path
# so that `import recall` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from recall import AsyncRecallClient, RecallSettings, RecallTimeout  # noqa: E402

# bench/ itself is off the import path (above): load the preload helpers from their file.
_spec = importlib.util.spec_from_file_location("bench_preload", _HERE / "preload.py")
assert _spec is not None and _spec.loader is not None
preload_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preload_module)
from vitrine.settings import load  # noqa: E402
from vitrine.vectorstore import CollectionLayout, search_params  # noqa: E402

log = preload_module.log
process_cpu_s = preload_module.process_cpu_s


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def measure_recall(
    client, layout: CollectionLayout, corpus: np.ndarray, queries: np.ndarray, k: int
) -> float:
    """Mean recall@k of the index, as the worker searches it, against exact cosine search."""
    hits = 0
    for q in queries:
        result = client.search(
            layout.name,
            data=[q.tolist()],
            anns_field="embedding",
            limit=k,
            output_fields=["listing_id"],
            search_params=search_params(layout, k),
            consistency_level="Bounded",
        )[0]
        exact = np.argpartition(-(corpus @ (q / np.linalg.norm(q))), k)[:k]
        want = {f"B{i:07d}" for i in exact}
        hits += len(want & {str(h["id"]) for h in result})
    return hits / (k * len(queries))


def open_loop(
    one: Callable[[int, float], None],
    count: int,
    interval: float,
    progress: tuple[int, int] | None = None,
) -> None:
    """Call ``one(i, scheduled)`` every ``interval`` seconds from a pool of 8 threads, open
    loop (a slow call never delays the next send); ``progress`` = (uncounted warm-up
    requests, log every N)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        t0 = time.perf_counter()
        for i in range(count):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, scheduled)
            if progress is not None and i > progress[0] and (i - progress[0]) % progress[1] == 0:
                log(f"  recall: {i - progress[0]:,}/{count - progress[0]:,} sent")


def direct_phase(
    client, layout: CollectionLayout, queries: np.ndarray, args, consistency: str
) -> dict[str, float]:
    """Single searches at the fixed rate, open loop, 8 at a time at most, made by the worker's
    own search code (`recall.index.MilvusIndex`: same fields, parameters and consistency), so
    the round trip's difference from it is the Kafka path alone."""
    from recall.index import MilvusIndex

    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    latencies: list[float] = []
    expression = 'category in ["shoes", "bags"]' if args.filtered else ""
    warmup = int(args.rate * args.warmup)
    index = MilvusIndex(client, layout, consistency_level=consistency)

    lags: list[float] = []

    def one(i: int, scheduled: float) -> None:
        if i >= warmup:
            lags.append(time.perf_counter() - scheduled)
        index.search([queries[i % len(queries)].tolist()], expression, args.k)
        if i >= warmup:  # the first --warmup seconds warm connections and caches, uncounted
            latencies.append(time.perf_counter() - scheduled)

    open_loop(one, warmup + total, interval)
    result = percentiles(latencies)
    result["send_lag_p50_ms"] = float(np.percentile(lags, 50) * 1000)
    return result


def recall_phase_threads(settings: RecallSettings, queries: np.ndarray, args) -> dict[str, float]:
    """The round trip with the blocking client from a pool of 8 threads: the same load
    generator as the direct phase (an asyncio sender wakes up to 1 ms late, since epoll waits
    in whole milliseconds, and that lag is counted in every latency measured from the
    scheduled send time)."""
    from recall import RecallClient

    client = RecallClient(settings)
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    warmup = int(args.rate * args.warmup)
    latencies: list[float] = []
    lags: list[float] = []
    timeouts = 0
    filters = {"categories": ["shoes", "bags"]} if args.filtered else None

    def one(i: int, scheduled: float) -> None:
        nonlocal timeouts
        if i >= warmup:
            lags.append(time.perf_counter() - scheduled)
        try:
            reply = client.similar_to_vector(
                queries[i % len(queries)].tolist(), k=args.k, filters=filters, timeout=10
            )
            if reply.status.value != "ok":
                raise RuntimeError(f"reply {reply.status}: {reply.reason} {reply.message}")
            if i >= warmup:
                latencies.append(time.perf_counter() - scheduled)
        except RecallTimeout:
            timeouts += 1
            latencies.append(10.0)

    try:
        # The first request waits for the worker's group join and metadata.
        client.similar_to_vector(queries[0].tolist(), k=args.k, timeout=60)
        open_loop(one, warmup + total, interval, progress=(warmup, int(args.rate * 5)))
    finally:
        client.close()
    result = percentiles(latencies)
    result["timeouts"] = timeouts
    result["send_lag_p50_ms"] = float(np.percentile(lags, 50) * 1000)
    return result


def fresh_clients(settings: RecallSettings, queries: np.ndarray, args) -> dict[str, dict]:
    """Construction and first round trip of new blocking clients (``--fresh-clients`` each),
    with the client's warm-up and, side by side, with it switched off: what a service that
    starts a client and sends at once sees."""
    import contextlib
    from unittest import mock

    from recall import RecallClient
    from recall.router import ReplyRouter

    out: dict[str, dict] = {}
    for label in ("warm_up", "no_warm_up"):
        built, first = [], []
        for i in range(args.fresh_clients):
            off = mock.patch.object(ReplyRouter, "_warm_up", lambda self: None)
            with off if label == "no_warm_up" else contextlib.nullcontext():
                started = time.perf_counter()
                client = RecallClient(settings)
            try:
                ready = time.perf_counter()
                client.similar_to_vector(queries[i % len(queries)].tolist(), k=args.k, timeout=30)
                first.append((time.perf_counter() - ready) * 1000)
                built.append((ready - started) * 1000)
            finally:
                client.close()
        out[label] = {
            "construct_ms_p50": float(np.median(built)),
            "first_request_ms_p50": float(np.median(first)),
            "first_request_ms_max": float(np.max(first)),
        }
    return out


async def recall_phase(settings: RecallSettings, queries: np.ndarray, args) -> dict[str, float]:
    client = await asyncio.to_thread(AsyncRecallClient, settings)
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    latencies: list[float] = []
    timeouts = 0
    filters = {"categories": ["shoes", "bags"]} if args.filtered else None
    warmup = int(args.rate * args.warmup)

    lags: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal timeouts
        if i >= warmup:
            lags.append(time.perf_counter() - scheduled)
        try:
            reply = await client.similar_to_vector(
                queries[i % len(queries)].tolist(), k=args.k, filters=filters, timeout=10
            )
            if reply.status.value != "ok":
                raise RuntimeError(f"reply {reply.status}: {reply.reason} {reply.message}")
            if i >= warmup:  # the warm-up's latencies are not counted (its timeouts are)
                latencies.append(time.perf_counter() - scheduled)
        except RecallTimeout:
            timeouts += 1
            latencies.append(10.0)  # counted at the timeout: a lost request is not a fast one

    try:
        # Warm up: the first request waits for the worker's group join and metadata.
        await client.similar_to_vector(queries[0].tolist(), k=args.k, timeout=60)
        tasks = []
        t0 = time.perf_counter()
        for i in range(warmup + total):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            if i > warmup and (i - warmup) % int(args.rate * 5) == 0:
                log(f"  recall: {i - warmup:,}/{total:,} sent")
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    result = percentiles(latencies)
    result["timeouts"] = timeouts
    result["send_lag_p50_ms"] = float(np.percentile(lags, 50) * 1000)
    return result


def recall_phase_name(client_kind: str, args) -> str:
    """``recall`` for the first (or only) client, ``recall_<kind>`` for the others."""
    return "recall" if client_kind == args.client.split(",")[0] else f"recall_{client_kind}"


class KindEndpoint:
    """The Milvus of one kind: the configured one if it is that kind and answers, else a
    private instance of this run."""

    def __init__(self, kind: str) -> None:
        from vitrine.infra.milvus import local_milvus
        from vitrine.settings import InfraSettings

        base = load(InfraSettings)
        self.kind = kind
        self.local = None
        self.service = None  # the local process serving this kind, when there is one
        if base.manages_milvus and base.milvus_kind == kind and local_milvus(base).answering():
            self.uri = base.milvus_endpoint
            self.service = local_milvus(base)
            return
        own = load(
            InfraSettings,
            home=base.home / f"bench-{kind}",
            milvus_kind=kind,
            milvus_port=base.milvus_port + 20,
            milvus_uri=None,
        )
        self.local = self.service = local_milvus(own)
        log(f"starting a private Milvus ({kind}) on {own.milvus_endpoint}")
        started = time.monotonic()
        self.local.start()
        log(f"  answering after {time.monotonic() - started:.1f} s")
        self.uri = own.milvus_endpoint

    def settle(self) -> None:
        """Wait until the Milvus process is idle (``preload.wait_until_idle``)."""
        pids = self.service.pids() if self.service is not None else []
        if not pids:
            log(f"[{self.kind}] not a local process: settling for 10 s")
            time.sleep(10)
            return
        waited = preload_module.wait_until_idle(pids)
        log(f"[{self.kind}] Milvus idle after {waited:.0f} s")

    def close(self) -> None:
        if self.local is not None:
            self.local.stop()


def run_kind(kind: str, args, infra) -> dict:
    """Every phase on one Milvus kind."""
    from vitrine.topics import TopicSpec, ensure_topics
    from vitrine.vectorstore import open_client

    endpoint = KindEndpoint(kind)
    tag = uuid.uuid4().hex[:8]
    collection = f"bench_recall_{tag}"
    requests_topic, replies_topic = f"bench.recall.{tag}.requests", f"bench.recall.{tag}.replies"
    settings = load(
        RecallSettings,
        milvus_uri=endpoint.uri,
        milvus_collection=collection,
        topic_recall_requests=requests_topic,
        topic_recall_replies=replies_topic,
        recall_group_id=f"bench.recall.{tag}",
        metrics_port=0,
    )
    ensure_topics(
        infra,
        [
            TopicSpec(requests_topic, 4, infra.topic_replication, {"retention.ms": "3600000"}),
            TopicSpec(replies_topic, 1, infra.topic_replication, {"retention.ms": "3600000"}),
        ],
    )
    client = open_client(endpoint.uri, timeout_s=120)
    workers: list[subprocess.Popen[bytes]] = []
    result: dict = {"kind": kind}
    layout = CollectionLayout(collection, args.dim, "FLAT" if kind == "lite" else "HNSW")
    try:
        log(f"[{kind}] building {collection}: {args.items:,} x {args.dim}-d, {layout.index_type}")
        layout, corpus, index = preload_module.preload(client, layout, args.items, args.batch)
        around = preload_module.centres(args.dim)
        queries = preload_module.clustered(np.random.default_rng(7), around, 4096)  # new ones
        recall_at_k = measure_recall(client, layout, corpus, queries[:200], args.k)
        del corpus
        result["index"] = {
            "type": layout.index_type,
            "build_params": {
                k: v for k, v in index.items() if k in ("M", "efConstruction", "nlist")
            },
            "search_params": search_params(layout, args.k)["params"],
            f"recall_at_{args.k}": recall_at_k,
            "seconds_to_build_and_load": index.get("seconds_to_build_and_load"),
        }
        log(f"[{kind}] index ready: {result['index']}")
        endpoint.settle()
        env = {
            **os.environ,
            "VITRINE_MILVUS_URI": endpoint.uri,
            "VITRINE_MILVUS_COLLECTION": collection,
            "VITRINE_TOPIC_RECALL_REQUESTS": requests_topic,
            "VITRINE_TOPIC_RECALL_REPLIES": replies_topic,
            "VITRINE_RECALL_GROUP_ID": settings.recall_group_id,
            "VITRINE_METRICS_PORT": "0",
        }
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "app.cli", "--log-level", "WARNING", "recall"], env=env
            )
            for _ in range(args.workers)
        ]
        consistency = settings.recall_consistency_level
        from vitrine.infra.kafka import LocalKafka

        brokers = LocalKafka(infra).pids() if infra.manages_kafka else []
        parts = {
            "milvus": endpoint.service.pids() if endpoint.service is not None else [],
            "broker": brokers,
            "worker": [w.pid for w in workers],
            "client": [os.getpid()],
        }
        requests = args.rate * (args.duration + args.warmup)
        # The workers are this process's children: count them once, as the worker's.
        apart = frozenset(pid for pids in parts.values() for pid in pids)

        def cpu_per_request(before: dict[str, float]) -> dict[str, float]:
            """Milliseconds of CPU each process used per request sent in the phase."""
            return {
                name: round((process_cpu_s(pids, apart) - before[name]) * 1000 / requests, 2)
                for name, pids in parts.items()
                if pids
            }

        log(f"[{kind}] direct search, {consistency}: {args.rate:g}/s for {args.duration:g} s")
        before = {name: process_cpu_s(pids, apart) for name, pids in parts.items()}
        result["direct"] = direct_phase(client, layout, queries, args, consistency)
        result["direct"]["cpu_ms_per_request"] = cpu_per_request(before)
        if args.kafka_warmup > 0:
            # A broker started a moment ago used 2.7 ms of CPU per round trip in its first
            # timed phase against 0.67-1.34 later (its JIT compiling, most likely), with tails
            # to match.
            log(f"[{kind}] warming the Kafka path up: {args.kafka_warmup:g} s, uncounted")
            warm = argparse.Namespace(**{**vars(args), "duration": args.kafka_warmup, "warmup": 0})
            recall_phase_threads(settings, queries, warm)
        for client_kind in args.client.split(","):
            phase = recall_phase_name(client_kind, args)
            log(
                f"[{kind}] recall round trip over Kafka ({client_kind} client): "
                f"{args.rate:g}/s for {args.duration:g} s"
            )
            before = {name: process_cpu_s(pids, apart) for name, pids in parts.items()}
            if client_kind == "async":
                result[phase] = asyncio.run(recall_phase(settings, queries, args))
            else:
                result[phase] = recall_phase_threads(settings, queries, args)
            result[phase]["cpu_ms_per_request"] = cpu_per_request(before)
        if args.fresh_clients > 0:
            log(f"[{kind}] fresh clients: {args.fresh_clients} with the warm-up, as many without")
            result["fresh_client"] = fresh_clients(settings, queries, args)
        first = recall_phase_name(args.client.split(",")[0], args)
        result["kafka_overhead_p50_ms"] = result[first]["p50_ms"] - result["direct"]["p50_ms"]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        if not args.keep:
            client.drop_collection(collection)
            from vitrine.topics import admin_client

            admin = admin_client(infra)
            for future in admin.delete_topics([requests_topic, replies_topic]).values():
                future.result()
        client.close()
        endpoint.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Recall round trip over Kafka vs a direct Milvus search at a fixed rate, "
        "on milvus-lite and on a Milvus server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--kinds", default="server,lite", help="Milvus kinds, comma-separated")
    parser.add_argument("--items", type=int, default=100_000, help="listings indexed")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of traffic before each phase's timing"
    )
    parser.add_argument(
        "--kafka-warmup",
        type=float,
        default=15.0,
        help="seconds of uncounted round trips before the first recall phase of each kind "
        "(a broker started a moment ago costs more per request at first)",
    )
    parser.add_argument("-k", type=int, default=10, help="results per request")
    parser.add_argument("--filtered", action="store_true", help="add a category filter")
    parser.add_argument("--batch", type=int, default=2000, help="rows per insert call")
    parser.add_argument(
        "--workers", type=int, default=1, help="recall worker replicas (one consumer group)"
    )
    parser.add_argument(
        "--client",
        default="threads,async",
        help="recall phase load generator(s), comma-separated: threads (RecallClient from 8 "
        "threads, the direct phase's load generator), async (AsyncRecallClient on one event "
        "loop, whose timer sends 0.5-1 ms late, counted in its latencies); the first one's "
        "phase is `recall`, the Kafka overhead over the direct phase is computed from it",
    )
    parser.add_argument(
        "--fresh-clients",
        type=int,
        default=5,
        help="new clients timed from construction to their first reply, with and without "
        "the warm-up (0: skip)",
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the collections and topics")
    args = parser.parse_args(argv)
    if not set(args.client.split(",")) <= {"threads", "async"}:
        parser.error("--client: threads, async or both, comma-separated")

    from vitrine.settings import InfraSettings

    infra = load(InfraSettings)
    log(f"Kafka {infra.bootstrap_servers}")
    results: dict[str, object] = {
        kind: run_kind(kind, args, infra) for kind in args.kinds.split(",")
    }
    results["conditions"] = {
        "items": args.items,
        "dim": args.dim,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "kafka_warmup_s": args.kafka_warmup,
        "k": args.k,
        "filtered": args.filtered,
        "kafka_brokers": infra.kafka_brokers,
        "recall_workers": args.workers,
        "recall_client": args.client,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_at_end": os.getloadavg(),
    }
    print(
        f"{'kind':7} {'phase':13} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'timeouts':>8}"
    )
    phases = ["direct", *(recall_phase_name(c, args) for c in args.client.split(","))]
    for kind in args.kinds.split(","):
        r = results[kind]
        for phase in phases:
            p = r[phase]  # type: ignore[index]
            print(
                f"{kind:7} {phase:13} {p['n']:6d} {p['p50_ms']:8.2f} {p['p90_ms']:8.2f} "
                f"{p['p99_ms']:8.2f} {p['max_ms']:8.2f} {p.get('timeouts', 0):8d}"
            )
    for kind in args.kinds.split(","):
        for phase in phases:
            cpu = results[kind][phase]["cpu_ms_per_request"]  # type: ignore[index]
            shares = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
            lag = results[kind][phase]["send_lag_p50_ms"]  # type: ignore[index]
            print(f"{kind} {phase}: sender lag p50 {lag:.2f} ms; CPU ms per request: {shares}")
    for kind in args.kinds.split(","):
        r = results[kind]
        idx = r["index"]  # type: ignore[index]
        print(
            f"{kind}: index {idx['type']} {idx['build_params']} search {idx['search_params']}, "
            f"recall@{args.k} {idx[f'recall_at_{args.k}']:.3f}; Kafka overhead p50 "
            f"{r['kafka_overhead_p50_ms']:+.2f} ms"  # type: ignore[index]
        )
    for kind in args.kinds.split(","):
        fresh = results[kind].get("fresh_client")  # type: ignore[attr-defined]
        if fresh:
            w, n = fresh["warm_up"], fresh["no_warm_up"]
            print(
                f"{kind} fresh client: construct p50 {w['construct_ms_p50']:.0f} ms, first "
                f"request p50 {w['first_request_ms_p50']:.0f} ms (max "
                f"{w['first_request_ms_max']:.0f}); without the warm-up "
                f"{n['construct_ms_p50']:.0f} ms, first p50 {n['first_request_ms_p50']:.0f} ms "
                f"(max {n['first_request_ms_max']:.0f})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
