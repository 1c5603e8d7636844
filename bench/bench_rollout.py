"""Rollout benchmark: bulk re-embed listings/s next to encoder-only throughput, in one run.

Writes N catalogue entries (rendered product photos of --image-size px served on loopback) to
a fresh state topic, starts a rollout into a new collection and times the job until it has
caught up (read, version check, fetch + sha256, decode, encode, upsert, commit). In the same
process and run it then times the encoder alone on the same covers: the towers on preprocessed
tensors (as bench_pipeline.py does), and preprocessing + towers from the bytes. Needs
`vitrine infra up`. Example::

    python bench/bench_rollout.py --listings 2000 --profile cpu

Without --model-dir an untrained model of --profile is exported once (needs the train extra).
Results: docs/benchmarks-pipeline.md, "Bulk re-embed".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import model_dir_for

from app.demo.marketplace import LoopbackImageServer, marketplace_events
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from schemas import CatalogueEntry, encode
from streams.rollout import commands
from streams.rollout.job import RolloutJob
from streams.rollout.settings import RolloutSettings
from vitrine.kafka_config import producer_config
from vitrine.settings import load
from vitrine.topics import ensure_topics
from vitrine.vectorstore import CollectionLayout, connect, ensure_collection


def catalogue(server: LoopbackImageServer, listings: int, image_size: int) -> list[CatalogueEntry]:
    """One entry per listing, its cover served by ``server``."""
    out = []
    for _, value in marketplace_events(server, listings, listings, image_size=image_size):
        event = json.loads(value)
        cover = event["image_urls"][0]
        data = server.images[cover.split(str(server.port), 1)[1]]
        out.append(
            CatalogueEntry(
                listing_id=event["listing_id"],
                version=event["version"],
                occurred_at=datetime.fromisoformat(event["occurred_at"]),
                title=event["title"],
                cover_url=cover,
                cover_sha256=hashlib.sha256(data).hexdigest(),
                category=event["category"],
                price=event["price"],
                seller_id=event["seller_id"],
                marketplace=event["marketplace"],
            )
        )
    return out


def towers_only(encoder: Encoder, covers: list[bytes], batch: int, seconds: float) -> float:
    """Listings/s through the towers alone (covers preprocessed beforehand)."""
    tensors = np.stack([preprocess_image(data, encoder.image_spec) for data in covers[:batch]])
    titles = ["classic red sport car edition"] * len(tensors)
    encoder.encode(tensors, titles)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode(tensors, titles)
        done += len(tensors)
    return done / (time.perf_counter() - started)


def decode_and_towers(encoder: Encoder, covers: list[bytes], batch: int, seconds: float) -> float:
    """Listings/s through preprocessing and the towers, from the cover bytes (one thread
    decodes, the towers use their own threads)."""
    titles = ["classic red sport car edition"] * batch
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = [covers[(i + j) % len(covers)] for j in range(batch)]
        i += batch
        tensors = np.stack([preprocess_image(data, encoder.image_spec) for data in chunk])
        encoder.encode(tensors, titles)
        done += batch
    return done / (time.perf_counter() - started)


def main() -> int:
    """Run the benchmark; print the figures and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=400, help="cover photo side, px")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="VITRINE_ENCODE_THREADS")
    parser.add_argument("--profile", default="cpu", help="model profile when no --model-dir")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--encoder-seconds", type=float, default=20.0)
    args = parser.parse_args()

    name = f"bench_{uuid.uuid4().hex[:8]}"
    base = load(RolloutSettings)
    model_dir = args.model_dir or model_dir_for(args.profile, base.home)
    settings = load(
        RolloutSettings,
        milvus_collection=name,
        topic_events=f"{name}.events",
        topic_embedded=f"{name}.embedded",
        topic_dlq=f"{name}.dlq",
        topic_recall_requests=f"{name}.rr",
        topic_recall_replies=f"{name}.rp",
        topic_state=f"{name}.state",
        topic_control=f"{name}.control",
        app_id=f"{name}-embedder",
        model_dir=model_dir,
        allow_loopback_images=True,
        metrics_port=0,
        encode_threads=args.threads,
        rollout_batch_size=args.batch_size,
        rollout_cover_cache=False,  # every cover fetched and hashed, as in a first rollout
        rollout_progress_every_s=5.0,
    )
    ensure_topics(settings)
    server = LoopbackImageServer()
    entries = catalogue(server, args.listings, args.image_size)
    producer = Producer(producer_config(settings))
    for entry in entries:
        producer.produce(settings.topic_state, key=entry.listing_id.encode(), value=encode(entry))
        producer.poll(0)
    assert producer.flush(30) == 0
    encoder = Encoder.load(model_dir)
    client = connect(settings)
    shared = encoder.manifest.shared_space.get("dim") if encoder.has_shared_space else None
    ensure_collection(
        client, CollectionLayout(name, encoder.manifest.embedding_dim, "FLAT", shared)
    )
    record = commands.start(settings, model_dir)
    covers = list(server.images.values())
    half = args.encoder_seconds / 2
    # The encoder alone is timed before and after the bulk: on a shared machine the load moves,
    # and the mean of the two brackets the bulk's conditions better than one side.
    before = (
        towers_only(encoder, covers, args.batch_size, half),
        decode_and_towers(encoder, covers, args.batch_size, half),
    )
    try:
        job = RolloutJob(
            settings, record, encoder=encoder, report=lambda line: print(line, flush=True)
        )
        summary = asyncio.run(job.run(until_caught_up=True))
        after = (
            towers_only(encoder, covers, args.batch_size, half),
            decode_and_towers(encoder, covers, args.batch_size, half),
        )
        towers = (before[0] + after[0]) / 2
        full = (before[1] + after[1]) / 2
    finally:
        for collection in (name, record.candidate_collection):
            if client.has_collection(collection):
                client.drop_collection(collection)
        client.close()
        server.close()
    bulk = summary.encoded / summary.seconds if summary.seconds else 0.0
    report = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "model": encoder.manifest.model_version,
        "listings": args.listings,
        "encoded": summary.encoded,
        "outcomes": dict(summary.outcomes),
        "bulk_seconds": round(summary.seconds, 2),
        "bulk_lps": round(bulk, 1),
        "towers_only_lps": round(towers, 1),
        "towers_only_lps_before_after": [round(before[0], 1), round(after[0], 1)],
        "decode_and_towers_lps": round(full, 1),
        "decode_and_towers_lps_before_after": [round(before[1], 1), round(after[1], 1)],
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "bulk_to_towers": round(bulk / towers, 3) if towers else None,
        "bulk_to_decode_and_towers": round(bulk / full, 3) if full else None,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "image_px": args.image_size,
    }
    print(
        f"bulk: {summary.encoded} listings in {summary.seconds:.1f} s = {bulk:.1f} listings/s\n"
        f"encoder, towers only: {towers:.1f} listings/s (bulk/towers {report['bulk_to_towers']})\n"
        f"encoder, decode + towers: {full:.1f} listings/s "
        f"(bulk/that {report['bulk_to_decode_and_towers']})"
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
