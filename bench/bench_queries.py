"""Queries by photo and by text on the demo data: how often a listing's own cover finds it,
and the latency of photo and text queries at a fixed rate, measured side by side in one run.

It generates the demo's synthetic marketplace (app.demo.marketplace, same seed and sizes as
`vitrine demo` by default), keeps each listing's newest state, encodes every cover and title with
the serving model exactly as the embedder does (preprocess -> towers -> fusion + shared-space
head), writes the rows into a fresh collection, starts one `vitrine recall` worker subprocess
on two fresh topics with that model, and then:

  1. own cover: for every listing, similar_to_image(its cover's JPEG bytes) -> is the listing
     among the top 3? (the photo goes through base64, the worker's decode and the image tower);
  2. latency: photo queries and text queries (each listing's title) at --rate requests/s, open
     loop, for --duration seconds each; p50/p90/p99 from each request's scheduled send time.

Needs the local broker and Milvus (`vitrine infra up`) and a model directory with a shared
image-title space (default: the demo's $VITRINE_HOME/models/cpu).

  python bench/bench_queries.py --listings 300 --rate 20 --duration 30
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
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from app.demo.marketplace import LoopbackImageServer, marketplace_events  # noqa: E402
from encoders.preprocess import preprocess_image  # noqa: E402
from encoders.runtime import Encoder  # noqa: E402
from recall import AsyncRecallClient, RecallSettings, RecallTimeout  # noqa: E402
from schemas import EventType, decode_listing_event  # noqa: E402
from vitrine.kafka_config import admin_config  # noqa: E402
from vitrine.settings import VitrineSettings, load  # noqa: E402
from vitrine.topics import TopicSpec, ensure_topics  # noqa: E402
from vitrine.vectorstore import CollectionLayout, connect, ensure_collection  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ms = np.asarray(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)}


def demo_listings(listings: int, events: int, seed: int) -> tuple[list[dict], LoopbackImageServer]:
    """The demo marketplace's listings in their newest state (deleted ones left out)."""
    server = LoopbackImageServer()
    newest: dict[str, dict] = {}
    for _, value in marketplace_events(server, listings, events, seed=seed):
        event = decode_listing_event(value)
        if event.event_type is EventType.DELETED:
            newest.pop(event.listing_id, None)
            continue
        path = "/" + event.image_urls[0].split("/", 3)[3]  # type: ignore[index]
        newest[event.listing_id] = {"event": event, "cover": server.images[path]}
    return list(newest.values()), server


def build_rows(encoder: Encoder, listings: list[dict], batch: int = 64) -> list[dict]:
    rows = []
    for start in range(0, len(listings), batch):
        chunk = listings[start : start + batch]
        pixels = np.stack([preprocess_image(x["cover"], encoder.image_spec) for x in chunk])
        result = encoder.encode(pixels, [x["event"].title for x in chunk])
        assert result.image_vectors is not None, "the model has no shared image-title space"
        for i, item in enumerate(chunk):
            event = item["event"]
            rows.append(
                {
                    "listing_id": event.listing_id,
                    "embedding": result.embeddings[i].tolist(),
                    "image_vector": result.image_vectors[i].tolist(),
                    "mismatch_score": float(result.mismatch[i]),
                    "category": event.category,
                    "price": float(event.price.amount),
                    "currency": event.price.currency,
                    "seller_id": event.seller_id,
                    "version": event.version,
                    "model_version": encoder.manifest.model_version,
                    "occurred_at_ms": 0,
                    "updated_at_ms": 0,
                }
            )
    return rows


async def open_loop(client: AsyncRecallClient, calls: list, rate: float) -> dict:
    """Run ``calls`` (coroutine factories) at ``rate``/s; latency from the scheduled time."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    started = time.monotonic()

    async def one(n: int, make) -> None:  # type: ignore[no-untyped-def]
        scheduled = started + n / rate
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        try:
            reply = await make()
        except RecallTimeout:
            failures["timeout"] = failures.get("timeout", 0) + 1
            return
        if reply.status.value != "ok":
            failures[reply.reason or reply.status.value] = failures.get(reply.reason, 0) + 1
            return
        latencies.append(time.monotonic() - scheduled)

    await asyncio.gather(*(one(n, make) for n, make in enumerate(calls)))
    return {"requests": len(calls), "ok": len(latencies), "failures": failures,
            **percentiles(latencies)}  # fmt: skip


async def measure(args: argparse.Namespace, settings: RecallSettings, listings: list[dict]) -> dict:
    async with AsyncRecallClient(settings) as client:
        # Warm-up: the worker loads the model on the first photo or text query.
        for _ in range(3):
            try:
                await client.search_text("warm up", k=3, timeout=60)
                break
            except RecallTimeout:
                continue
        hits = 0
        misses: list[str] = []
        for item in listings:
            reply = await client.similar_to_image(item["cover"], k=3, timeout=30)
            ids = [i.listing_id for i in reply.items or ()]
            if item["event"].listing_id in ids:
                hits += 1
            else:
                misses.append(item["event"].listing_id)
        total = int(args.rate * args.duration)
        photos = [listings[n % len(listings)]["cover"] for n in range(total)]
        titles = [listings[n % len(listings)]["event"].title for n in range(total)]
        photo = await open_loop(
            client, [lambda b=b: client.similar_to_image(b, k=10) for b in photos], args.rate
        )
        text = await open_loop(
            client, [lambda t=t: client.search_text(t, k=10) for t in titles], args.rate
        )
    return {
        "own_cover_top3": {"listings": len(listings), "found": hits,
                           "share": round(hits / len(listings), 4), "missed": misses[:20]},
        "photo_queries": photo,
        "text_queries": text,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=300, help="demo listings (300)")
    parser.add_argument("--events", type=int, default=1200, help="demo events (1200)")
    parser.add_argument("--seed", type=int, default=7, help="demo seed (7)")
    parser.add_argument("--model", type=Path, default=None, help="model dir (demo's cpu model)")
    parser.add_argument("--rate", type=float, default=20.0, help="queries per second (20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per kind (30)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    base = load(VitrineSettings)
    model_dir = args.model or base.home / "models" / "cpu"
    encoder = Encoder.load(model_dir)
    log(f"model {encoder.manifest.model_version} from {model_dir}")
    listings, server = demo_listings(args.listings, args.events, args.seed)
    log(f"{len(listings)} live demo listings; encoding covers and titles")
    started = time.monotonic()
    rows = build_rows(encoder, listings)
    encode_s = time.monotonic() - started

    tag = uuid.uuid4().hex[:8]
    collection, requests, replies = f"bench_q_{tag}", f"bench.q.{tag}.req", f"bench.q.{tag}.rep"
    settings = load(
        RecallSettings,
        milvus_collection=collection,
        topic_recall_requests=requests,
        topic_recall_replies=replies,
        recall_group_id=f"bench.q.{tag}",
        model_dir=model_dir,
        metrics_port=0,
    )
    ensure_topics(settings, [TopicSpec(requests, 2, 1, {}), TopicSpec(replies, 1, 1, {})])
    client = connect(settings)
    shared_dim = int(encoder.manifest.shared_space["dim"])
    layout = CollectionLayout.for_settings(settings, encoder.manifest.embedding_dim, shared_dim)
    ensure_collection(client, layout)
    client.insert(collection, rows)
    env = {
        **os.environ,
        "VITRINE_MILVUS_COLLECTION": collection,
        "VITRINE_TOPIC_RECALL_REQUESTS": requests,
        "VITRINE_TOPIC_RECALL_REPLIES": replies,
        "VITRINE_RECALL_GROUP_ID": f"bench.q.{tag}",
        "VITRINE_MODEL_DIR": str(model_dir),
        "VITRINE_METRICS_PORT": "0",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--log-level", "WARNING", "recall"], env=env
    )
    try:
        figures = asyncio.run(measure(args, settings, listings))
    finally:
        worker.terminate()
        worker.wait(30)
        client.drop_collection(collection)
        client.close()
        server.close()
        from confluent_kafka.admin import AdminClient

        AdminClient(admin_config(settings)).delete_topics([requests, replies])
    report = {
        "conditions": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "milvus": settings.milvus_endpoint,
            "model": encoder.manifest.model_version,
            "profile": encoder.manifest.profile,
            "listings": len(listings),
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "encode_listings_per_s": round(len(rows) / encode_s, 1),
        },
        **figures,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
