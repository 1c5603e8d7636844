"""Pipeline benchmark: listing events at a fixed rate through the embedder process.

Prints sustained throughput, freshness (event time -> row written and searchable, from the
embedded events) p50/p95/p99, and the encoder-only throughput of the same model measured in
the same run, with their ratio. Needs `vitrine infra up`. Example::

    python bench/bench_pipeline.py --rate 40 --events 1200 --profile cpu

Without --model-dir an untrained model of --profile is exported once (needs the train extra);
untrained weights cost exactly what trained ones do. Results: docs/benchmarks-pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from app.demo.marketplace import LoopbackImageServer, marketplace_events, pace
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from vitrine.kafka_config import producer_config
from vitrine.settings import VitrineSettings, load
from vitrine.topics import ensure_topics


def model_dir_for(profile: str, home: Path) -> Path:
    """An exported, untrained model of ``profile``, built once under the Vitrine home."""
    target = home / "bench-models" / profile
    if (target / "manifest.json").is_file():
        return target
    import torch

    from encoders.export import export_model
    from encoders.profiles import get_profile
    from encoders.text import default_text_model_dir
    from encoders.train import build_towers

    torch.manual_seed(0)
    towers = build_towers(get_profile(profile), str(default_text_model_dir()), None)
    export_model(towers, target, {"trained": False}, parity=False)
    return target


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def encoder_only(model_dir: Path, images: list[bytes], batch: int, seconds: float) -> float:
    """Listings per second through the towers alone (images preprocessed beforehand)."""
    encoder = Encoder.load(model_dir)
    tensors = np.stack([preprocess_image(data, encoder.image_spec) for data in images[:batch]])
    titles = ["classic red sport car edition"] * len(tensors)
    encoder.encode(tensors, titles)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode(tensors, titles)
        done += len(tensors)
    return done / (time.perf_counter() - started)


def preload_collection(settings: VitrineSettings, model_dir: Path, rows: int) -> dict:
    """Create the benchmark's collection as the embedder would and store ``rows`` clustered
    rows in it, indexed and loaded (bench/preload.py); return what was built."""
    import importlib.util

    from vitrine.vectorstore import CollectionLayout, connect

    spec = importlib.util.spec_from_file_location(
        "bench_preload", Path(__file__).with_name("preload.py")
    )
    assert spec is not None and spec.loader is not None
    preload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preload)
    encoder = Encoder.load(model_dir)  # the dimensions as the embedder reads them
    manifest = encoder.manifest
    shared = manifest.shared_space.get("dim") if encoder.has_shared_space else None
    layout = CollectionLayout.for_settings(settings, manifest.embedding_dim, shared)
    del encoder
    client = connect(settings, timeout_s=120)
    try:
        layout, _vectors, index = preload.preload(client, layout, rows)
    finally:
        client.close()
    keep = ("index_type", "M", "efConstruction", "nlist", "seconds_to_build_and_load")
    return {"rows": rows, **{k: v for k, v in index.items() if k in keep}}


def main() -> int:
    """Run the benchmark and print its figures (and a JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="events/s offered")
    parser.add_argument("--events", type=int, default=1200, help="timed events")
    parser.add_argument("--listings", type=int, default=600, help="distinct listings")
    parser.add_argument("--image-size", type=int, default=400, help="cover photo side, px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=int, default=50)
    parser.add_argument("--profile", default="cpu", help="model profile when no --model-dir")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--encoder-seconds", type=float, default=10.0)
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="store N rows in the collection before the embedder starts (bench/preload.py): "
        "freshness at size",
    )
    args = parser.parse_args()

    base = load(VitrineSettings)
    model_dir = args.model_dir or model_dir_for(args.profile, base.home)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    settings = load(
        VitrineSettings,
        milvus_collection=name,
        topic_events=f"{name}.events",
        topic_embedded=f"{name}.embedded",
        topic_dlq=f"{name}.dlq",
        topic_recall_requests=f"{name}.rr",
        topic_recall_replies=f"{name}.rp",
    )
    ensure_topics(settings)
    preloaded = preload_collection(settings, model_dir, args.preload) if args.preload else {}
    server = LoopbackImageServer()
    warm = 40
    events = list(
        marketplace_events(
            server,
            args.listings + warm,
            args.events + warm,
            image_size=args.image_size,
        )
    )
    env = dict(os.environ)
    env.update(
        {
            "VITRINE_MILVUS_COLLECTION": name,
            "VITRINE_TOPIC_EVENTS": settings.topic_events,
            "VITRINE_TOPIC_EMBEDDED": settings.topic_embedded,
            "VITRINE_TOPIC_DLQ": settings.topic_dlq,
            "VITRINE_APP_ID": f"{name}-embedder",
            "VITRINE_MODEL_DIR": str(model_dir),
            "VITRINE_ALLOW_LOOPBACK_IMAGES": "true",
            "VITRINE_METRICS_PORT": "0",
            "VITRINE_BATCH_SIZE": str(args.batch_size),
            "VITRINE_BATCH_WAIT_MS": str(args.batch_wait_ms),
            "VITRINE_LOG_LEVEL": "WARNING",
        }
    )
    embedder = subprocess.Popen([sys.executable, "-m", "app.cli", "embedder"], env=env)
    producer = Producer(producer_config(settings))
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{name}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic_embedded])

    def drain(expect: int, timeout_s: float, idle_s: float = 10.0) -> list[dict]:
        # Superseded or stale versions publish nothing: stop after idle_s of silence too.
        got: list[dict] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while len(got) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(json.loads(msg.value()))
                last = time.monotonic()
            elif got and time.monotonic() - last > idle_s:
                break
        return got

    def send(batch: list[tuple[bytes, bytes]], rate: float) -> None:
        for key, value in pace(iter(batch), rate):
            # Stamp occurred_at at send time: freshness starts when the event exists.
            payload = json.loads(value)
            payload["occurred_at"] = datetime.now().astimezone().isoformat()
            producer.produce(settings.topic_events, key=key, value=json.dumps(payload).encode())
            producer.poll(0)
        producer.flush(30)

    try:
        send(events[:warm], 0)
        warmed = drain(warm, 180, idle_s=20.0)
        print(f"warm-up: {len(warmed)}/{warm} events through the embedder", flush=True)
        started = time.time()
        send(events[warm:], args.rate)
        offered = args.events / (time.time() - started)
        print(f"sent {args.events} events at {offered:.1f}/s; waiting for the embedder", flush=True)
        results = drain(args.events, 120 + args.events / max(args.rate, 1))
    finally:
        embedder.send_signal(signal.SIGTERM)
        embedder.wait(60)
        consumer.close()
        server.close()
        if args.preload:  # a preloaded collection holds hundreds of MB in Milvus: drop it
            from vitrine.vectorstore import connect

            client = connect(settings)
            client.drop_collection(name)
            client.close()
    fresh = [r["freshness_seconds"] for r in results]
    stamps = sorted(datetime.fromisoformat(r["embedded_at"]).timestamp() for r in results)
    span = stamps[-1] - started if stamps else float("nan")
    throughput = len(results) / span if stamps else 0.0
    sample = list(server.images.values())
    enc = encoder_only(model_dir, sample, args.batch_size, args.encoder_seconds)
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    report = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "model": Encoder.load(model_dir).manifest.model_version,
        "offered_rate": round(offered, 1),
        "events": args.events,
        "written": len(results),
        "outcomes": outcomes,
        "throughput_eps": round(throughput, 1),
        "freshness_p50_s": round(percentile(fresh, 50), 3),
        "freshness_p95_s": round(percentile(fresh, 95), 3),
        "freshness_p99_s": round(percentile(fresh, 99), 3),
        "encoder_only_lps": round(enc, 1),
        "pipeline_to_encoder": round(throughput / enc, 3) if enc else None,
        "batch_size": args.batch_size,
        "image_px": args.image_size,
        "preloaded": preloaded,
        "milvus": "lite" if settings.milvus_is_lite else "server",
        "load_average_at_end": os.getloadavg(),
    }
    print(
        f"offered {report['offered_rate']} ev/s, written {len(results)}/{args.events}, "
        f"sustained {report['throughput_eps']} ev/s\n"
        f"freshness p50 {report['freshness_p50_s']} s, p95 {report['freshness_p95_s']} s, "
        f"p99 {report['freshness_p99_s']} s\n"
        f"encoder only {report['encoder_only_lps']} listings/s; "
        f"pipeline/encoder {report['pipeline_to_encoder']}"
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
