"""Rollout benchmark: bulk re-embed listings/s next to encoder-only throughput, in one run.

Writes N catalogue entries (rendered product photos of --image-size px, served on loopback by
a separate process) to a fresh state topic, starts a rollout into a new collection and times
the job until it has caught up (read, version check, fetch + sha256, decode, encode, upsert,
commit); the rate is taken from the first durable batch to the end (the whole run's, start-up
included, is printed too). In the same process and run it times the encoder alone on the same
covers and titles, before and after the bulk (averaged): the towers on preprocessed tensors (as
bench_pipeline.py does), and preprocessing + towers from the bytes. Each figure is also given
per CPU-second of this process (the bulk's own work: Kafka client, fetching, hashing, decoding,
towers, Milvus client), which moves far less than wall-clock rates when other work shares the
machine. Needs `vitrine infra up`. Example::

    python bench/bench_rollout.py --listings 2000 --profile cpu

Without --model-dir an untrained model of --profile is exported once (needs the train extra).
Results: docs/benchmarks-rollout.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
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


def catalogue(
    listings: int, image_size: int, directory: Path, port: int
) -> tuple[list[CatalogueEntry], list[bytes]]:
    """One entry per listing, its cover written under ``directory`` (served on ``port`` by
    another process, so the image host's CPU is not counted as the job's), and the covers."""
    render = LoopbackImageServer()
    out, covers = [], []
    for _, value in marketplace_events(render, listings, listings, image_size=image_size):
        event = json.loads(value)
        data = render.images[event["image_urls"][0].split(str(render.port), 1)[1]]
        name = f"{event['listing_id']}.jpg"
        (directory / name).write_bytes(data)
        cover = f"http://127.0.0.1:{port}/{name}"
        covers.append(data)
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
    render.close()
    return out, covers


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def towers_only(
    encoder: Encoder, covers: list[bytes], titles: list[str], batch: int, seconds: float
) -> tuple[float, float]:
    """(listings/s, listings per CPU-second) through the towers alone (covers preprocessed
    beforehand), on the catalogue's own covers and titles (the text tower's cost follows the
    titles' lengths)."""
    tensors = np.stack([preprocess_image(data, encoder.image_spec) for data in covers[:batch]])
    titles = titles[: len(tensors)]
    encoder.encode(tensors, titles)  # warm-up
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        encoder.encode(tensors, titles)
        done += len(tensors)
    return done / (time.perf_counter() - started), done / (time.process_time() - cpu)


def decode_and_towers(
    encoder: Encoder, covers: list[bytes], titles: list[str], batch: int, seconds: float
) -> tuple[float, float]:
    """(listings/s, listings per CPU-second) through preprocessing and the towers, from the
    cover bytes (one thread decodes, the towers use their own threads)."""
    done, started, cpu, i = 0, time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - started < seconds:
        picked = [(i + j) % len(covers) for j in range(batch)]
        i += batch
        tensors = np.stack([preprocess_image(covers[k], encoder.image_spec) for k in picked])
        encoder.encode(tensors, [titles[k] for k in picked])
        done += batch
    return done / (time.perf_counter() - started), done / (time.process_time() - cpu)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        **RolloutSettings.names_for(name),
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
    scratch = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    port = free_port()
    entries, covers = catalogue(args.listings, args.image_size, scratch, port)
    titles = [entry.title for entry in entries]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=scratch,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    half = args.encoder_seconds / 2
    # The encoder alone is timed before and after the bulk: on a shared machine the load moves,
    # and the mean of the two brackets the bulk's conditions better than one side.
    before = (
        towers_only(encoder, covers, titles, args.batch_size, half),
        decode_and_towers(encoder, covers, titles, args.batch_size, half),
    )
    try:
        # The job opens the model itself, as in production (towers in a child process unless
        # VITRINE_ENCODE_PROCESS=false); the child is reaped when the job ends, so its CPU
        # shows in RUSAGE_CHILDREN.
        job = RolloutJob(settings, record, report=lambda line: print(line, flush=True))
        cpu_started = time.process_time() + _children_cpu()
        summary = asyncio.run(job.run(until_caught_up=True))
        bulk_cpu = summary.encoded / (time.process_time() + _children_cpu() - cpu_started)
        after = (
            towers_only(encoder, covers, titles, args.batch_size, half),
            decode_and_towers(encoder, covers, titles, args.batch_size, half),
        )
        towers = (before[0][0] + after[0][0]) / 2
        full = (before[1][0] + after[1][0]) / 2
        towers_cpu = (before[0][1] + after[0][1]) / 2
        full_cpu = (before[1][1] + after[1][1]) / 2
    finally:
        for collection in (name, record.candidate_collection):
            if client.has_collection(collection):
                client.drop_collection(collection)
        client.close()
        server.terminate()
        server.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    whole = summary.encoded / summary.seconds if summary.seconds else 0.0
    # The bulk's rate: from its first durable batch to the end. Start-up (the model loaded in
    # the towers' process, the state's consumer group joined, the first covers fetched) is a
    # fixed cost, a few seconds per run, that a catalogue of any real size does not notice;
    # on this benchmark's 2,000 listings it is a fifth of the run. Both figures are reported.
    bulk = summary.steady_rate or whole
    report = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "model": encoder.manifest.model_version,
        "listings": args.listings,
        "encoded": summary.encoded,
        "outcomes": dict(summary.outcomes),
        "bulk_seconds": round(summary.seconds, 2),
        "startup_seconds": (
            round(summary.first_write_s, 2) if summary.first_write_s is not None else None
        ),
        "bulk_lps": round(bulk, 1),
        "bulk_lps_whole_run": round(whole, 1),
        "bulk_whole_run_to_towers": round(whole / towers, 3) if towers else None,
        "towers_only_lps": round(towers, 1),
        "towers_only_lps_before_after": [round(before[0][0], 1), round(after[0][0], 1)],
        "decode_and_towers_lps": round(full, 1),
        "decode_and_towers_lps_before_after": [round(before[1][0], 1), round(after[1][0], 1)],
        "bulk_per_cpu_s": round(bulk_cpu, 2),
        "towers_only_per_cpu_s": round(towers_cpu, 2),
        "decode_and_towers_per_cpu_s": round(full_cpu, 2),
        "cpu_bulk_to_towers": round(bulk_cpu / towers_cpu, 3),
        "cpu_bulk_to_decode_and_towers": round(bulk_cpu / full_cpu, 3),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "bulk_to_towers": round(bulk / towers, 3) if towers else None,
        "bulk_to_decode_and_towers": round(bulk / full, 3) if full else None,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "image_px": args.image_size,
    }
    print(
        f"bulk: {summary.encoded} listings in {summary.seconds:.1f} s = {whole:.1f} listings/s "
        f"(bulk/towers {report['bulk_whole_run_to_towers']}), of which start-up "
        f"{report['startup_seconds']} s; after the first batch {bulk:.1f} listings/s\n"
        f"encoder, towers only: {towers:.1f} listings/s (bulk/towers {report['bulk_to_towers']})\n"
        f"encoder, decode + towers: {full:.1f} listings/s "
        f"(bulk/that {report['bulk_to_decode_and_towers']})\n"
        f"per CPU-second of this process: bulk {bulk_cpu:.2f}, towers only {towers_cpu:.2f} "
        f"(ratio {report['cpu_bulk_to_towers']}), decode + towers {full_cpu:.2f} "
        f"(ratio {report['cpu_bulk_to_decode_and_towers']})"
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
