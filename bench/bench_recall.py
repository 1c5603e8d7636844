"""Recall round trip over Kafka vs a direct Milvus search, at a fixed request rate.

Builds a dedicated collection of N random listings (default 100k, 256-d) and two dedicated
topics, starts one `vitrine recall` worker in a subprocess, then runs the same queries at the
same fixed rate, open loop (latency counted from each request's scheduled send time, so a
stall is not hidden by sending less):

  1. direct: MilvusClient.search of the query vector (what a service talking to Milvus would do),
     at the Strong consistency level the worker uses, and again at Bounded;
  2. recall: AsyncRecallClient.similar_to_vector over Kafka (request topic -> worker ->
     the same Milvus search -> reply topic).

Prints p50/p90/p99 per phase and the overhead ratio of the round trip to the direct search.
Everything it creates is dropped at the end (unless --keep).

  python bench/bench_recall.py --items 100000 --rate 100 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# This file is named like the package it measures: drop its own folder from the import path
# so that `import recall` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from recall import AsyncRecallClient, RecallSettings, RecallTimeout  # noqa: E402
from vitrine.settings import load  # noqa: E402
from vitrine.vectorstore import (  # noqa: E402
    CollectionLayout,
    ensure_collection,
    search_params,
)

CATEGORIES = ("shoes", "bags", "watches", "toys", "home", "garden", "books", "phones")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def build_collection(client, name: str, items: int, dim: int, batch: int) -> np.ndarray:
    layout = CollectionLayout(name, dim, "FLAT")
    ensure_collection(client, layout)
    rng = np.random.default_rng(42)
    started = time.monotonic()
    for start in range(0, items, batch):
        n = min(batch, items - start)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        rows = [
            {
                "listing_id": f"B{start + i:07d}",
                "embedding": vectors[i].tolist(),
                "mismatch_score": float(rng.integers(0, 65) / 64),
                "category": CATEGORIES[(start + i) % len(CATEGORIES)],
                "price": float(round(rng.uniform(1, 1000), 2)),
                "currency": "EUR",
                "seller_id": f"S{(start + i) % 997}",
                "version": 1,
                "model_version": "bench.1",
                "occurred_at_ms": 0,
                "updated_at_ms": 0,
            }
            for i in range(n)
        ]
        client.insert(name, rows)
        done = start + n
        if done % (batch * 10) == 0 or done == items:
            rate = done / (time.monotonic() - started)
            log(f"inserted {done:,}/{items:,} rows ({rate:,.0f} rows/s)")
    client.flush(name)
    started = time.monotonic()
    client.load_collection(name)
    log(f"collection loaded in {time.monotonic() - started:.2f} s")
    return np.random.default_rng(7).standard_normal((4096, dim)).astype(np.float32)


def direct_phase(
    client, layout: CollectionLayout, queries: np.ndarray, args, consistency: str
) -> dict[str, float]:
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    latencies: list[float] = []
    expression = 'category in ["shoes", "bags"]' if args.filtered else ""

    def one(i: int, scheduled: float) -> None:
        client.search(
            layout.name,
            data=[queries[i % len(queries)].tolist()],
            anns_field="embedding",
            filter=expression,
            limit=args.k,
            output_fields=["listing_id", "mismatch_score", "category", "price", "currency"],
            search_params=search_params(layout, args.k),
            consistency_level=consistency,
        )
        latencies.append(time.perf_counter() - scheduled)

    for i in range(20):  # warm up connections and caches before measuring
        one(i, time.perf_counter())
    latencies.clear()
    with ThreadPoolExecutor(max_workers=8) as pool:
        t0 = time.perf_counter()
        for i in range(total):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, scheduled)
    return percentiles(latencies)


async def recall_phase(settings: RecallSettings, queries: np.ndarray, args) -> dict[str, float]:
    client = await asyncio.to_thread(AsyncRecallClient, settings)
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    latencies: list[float] = []
    timeouts = 0
    filters = {"categories": ["shoes", "bags"]} if args.filtered else None

    async def one(i: int, scheduled: float) -> None:
        nonlocal timeouts
        try:
            reply = await client.similar_to_vector(
                queries[i % len(queries)].tolist(), k=args.k, filters=filters, timeout=10
            )
            if reply.status.value != "ok":
                raise RuntimeError(f"reply {reply.status}: {reply.reason} {reply.message}")
            latencies.append(time.perf_counter() - scheduled)
        except RecallTimeout:
            timeouts += 1

    try:
        # Warm up: the first request waits for the worker's group join and metadata.
        await client.similar_to_vector(queries[0].tolist(), k=args.k, timeout=60)
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            if i and i % int(args.rate * 5) == 0:
                log(f"  recall: {i:,}/{total:,} sent")
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    result = percentiles(latencies)
    result["timeouts"] = timeouts
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Recall round trip over Kafka vs a direct Milvus search at a fixed rate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--items", type=int, default=100_000, help="listings indexed")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("-k", type=int, default=10, help="results per request")
    parser.add_argument("--filtered", action="store_true", help="add a category filter")
    parser.add_argument("--batch", type=int, default=1000, help="rows per insert call")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the collection and topics")
    args = parser.parse_args(argv)

    from vitrine.settings import InfraSettings
    from vitrine.topics import TopicSpec, ensure_topics
    from vitrine.vectorstore import open_client

    tag = uuid.uuid4().hex[:8]
    collection = f"bench_recall_{tag}"
    requests_topic, replies_topic = f"bench.recall.{tag}.requests", f"bench.recall.{tag}.replies"
    settings = load(
        RecallSettings,
        milvus_collection=collection,
        topic_recall_requests=requests_topic,
        topic_recall_replies=replies_topic,
        recall_group_id=f"bench.recall.{tag}",
        metrics_port=0,
    )
    infra = load(InfraSettings)
    log(f"Kafka {settings.bootstrap_servers}, Milvus {settings.milvus_endpoint}")
    ensure_topics(
        infra,
        [
            TopicSpec(requests_topic, 4, 1, {"retention.ms": "3600000"}),
            TopicSpec(replies_topic, 1, 1, {"retention.ms": "3600000"}),
        ],
    )
    client = open_client(settings.milvus_endpoint)
    worker = None
    results: dict[str, object] = {}
    try:
        log(f"building {collection}: {args.items:,} x {args.dim}-d")
        queries = build_collection(client, collection, args.items, args.dim, args.batch)
        layout = CollectionLayout(collection, args.dim, "FLAT")
        env = {
            **os.environ,
            "VITRINE_MILVUS_COLLECTION": collection,
            "VITRINE_TOPIC_RECALL_REQUESTS": requests_topic,
            "VITRINE_TOPIC_RECALL_REPLIES": replies_topic,
            "VITRINE_RECALL_GROUP_ID": settings.recall_group_id,
            "VITRINE_METRICS_PORT": "0",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--log-level", "WARNING", "recall"], env=env
        )
        for consistency in ("Strong", "Bounded"):
            log(f"direct search, {consistency}: {args.rate:g}/s for {args.duration:g} s")
            results[f"direct_{consistency.lower()}"] = direct_phase(
                client, layout, queries, args, consistency
            )
        log(f"recall round trip over Kafka: {args.rate:g}/s for {args.duration:g} s")
        results["recall"] = asyncio.run(recall_phase(settings, queries, args))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        if not args.keep:
            client.drop_collection(collection)
            from vitrine.topics import admin_client

            admin = admin_client(infra)
            for future in admin.delete_topics([requests_topic, replies_topic]).values():
                future.result()
            log("dropped the collection and topics")
        client.close()

    direct, strong_bounded, rt = (
        results["direct_strong"],
        results["direct_bounded"],
        results["recall"],
    )
    results["conditions"] = {
        "items": args.items,
        "dim": args.dim,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "k": args.k,
        "filtered": args.filtered,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    results["overhead_ratio_p50"] = rt["p50_ms"] / direct["p50_ms"]  # type: ignore[index]
    results["overhead_ratio_p99"] = rt["p99_ms"] / direct["p99_ms"]  # type: ignore[index]
    print(f"{'phase':24} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("direct_strong", "direct_bounded", "recall"):
        r = results[name]
        print(
            f"{name:24} {r['n']:6d} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "  # type: ignore[index]
            f"{r['p99_ms']:8.2f} {r['max_ms']:8.2f}"  # type: ignore[index]
        )
    print(
        f"recall / direct (Strong): p50 x{results['overhead_ratio_p50']:.2f}, "
        f"p99 x{results['overhead_ratio_p99']:.2f}; timeouts {rt['timeouts']}"  # type: ignore[index]
    )
    del strong_bounded
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
