"""Pipeline benchmark: the embedder process against the decode + encode capacity of its model.

One run, side by side on the same machine:

1. saturation: ``--events`` new listings (each a create with its own cover photo, so every
   event is fetched, decoded and encoded) offered as fast as the producer can; the embedder's
   maximum sustained rate is what it wrote per second from the first send to its last write;
2. freshness: another ``--events`` new listings offered at ``--load`` (default 0.7) times that
   rate; freshness (event time -> row written and searchable, from the embedded events)
   p50/p95/p99;
3. reference, before the embedder starts and again after it stopped (per figure the better
   of the two, so a load that drops meanwhile cannot flatter the ratio): the same covers
   decoded (``preprocess_image``) and encoded (towers + fusion) in this process with the
   embedder's executor threads and ONNX Runtime threads, decode of batch k+1 (in the pool)
   overlapping the encode of batch k (on a thread of its own), and, for the record, decode then
   encode on one thread, and the encoder alone. The ratio is the pipeline's maximum sustained
   rate over the better of the two decode + encode figures. The CPU per listing of each side
   (all processes of the pipeline) is printed too: it does not depend on the machine's load.

``--rate R`` skips the saturation phase and offers R events/s; ``--listings L`` (< events)
turns later events into a mix of price edits, new photos and deletes (not comparable with the
reference: price edits need no decode or encode). Needs `vitrine infra up`. Example::

    python bench/bench_pipeline.py --events 600 --profile cpu

Without --model-dir an untrained model of --profile is exported once (needs the train extra);
untrained weights cost exactly what trained ones do. Results: docs/benchmarks-pipeline.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer

from app.demo.marketplace import LoopbackImageServer, marketplace_events, pace
from encoders.preprocess import ImageSpec, preprocess_image
from encoders.runtime import Encoder
from streams.settings import EmbedderSettings
from vitrine.kafka_config import producer_config
from vitrine.settings import VitrineSettings, load
from vitrine.topics import ensure_topics

# bench/ is not a package and may be off the import path: load the shared helpers by file.
_spec = importlib.util.spec_from_file_location(
    "bench_preload", Path(__file__).with_name("preload.py")
)
assert _spec is not None and _spec.loader is not None
preload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preload)
cpu_seconds = preload.cpu_seconds

TITLE = "classic red sport car edition"


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


def _timed(seconds: float, step: Callable[[int], int]) -> tuple[float, int]:
    """Items per second of ``step(round) -> items`` repeated for about ``seconds``, and items."""
    done, rounds, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += step(rounds)
        rounds += 1
    return done / (time.perf_counter() - started), done


def reference(
    encoder: Encoder,
    images: list[bytes],
    titles: list[str],
    batch: int,
    threads: int,
    seconds: float,
) -> dict[str, float]:
    """Listings per second through decode + encode of the same covers and titles, three ways.

    The three are measured in alternating short rounds and each reported as its median, so a
    change of the machine's load (it is shared) does not favour one of them. The titles are
    the events' own: the text tower's cost grows with the longest title of a batch (padding).
    """
    spec: ImageSpec = encoder.image_spec
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)] or [[]]
    titles = titles or [TITLE]
    turn = [0]
    pool = ThreadPoolExecutor(threads, thread_name_prefix="bench-reference")
    # As in the embedder: images decoded in the pool, the towers on a thread of their own.
    model = ThreadPoolExecutor(1, thread_name_prefix="bench-reference-model")

    def decode(chunk: list[bytes]) -> list[Future[np.ndarray]]:
        # One task per image, as the embedder's prepare stage submits them.
        return [pool.submit(preprocess_image, data, spec) for data in chunk]

    def encode(tensors: np.ndarray) -> int:
        start = turn[0] = (turn[0] + len(tensors)) % len(titles)
        encoder.encode(tensors, [titles[(start + i) % len(titles)] for i in range(len(tensors))])
        return len(tensors)

    encode(np.stack([f.result() for f in decode(chunks[0])]))  # warm-up
    tensors = np.stack([f.result() for f in decode(chunks[0])])

    def sequential(k: int) -> int:
        chunk = chunks[k % len(chunks)]
        return encode(np.stack([preprocess_image(data, spec) for data in chunk]))

    pending = [decode(chunks[0])]

    def overlapped(k: int) -> int:
        ready = np.stack([f.result() for f in pending[0]])
        pending[0] = decode(chunks[(k + 1) % len(chunks)])
        return model.submit(encode, ready).result()

    ways: dict[str, Callable[[int], int]] = {
        "encoder_only": lambda _: encode(tensors),
        "decode_then_encode": sequential,
        "overlapped": overlapped,
    }
    rounds = 5
    figures: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, step in ways.items():
            before = os.times()
            rate, done = _timed(seconds / rounds / len(ways), step)
            after = os.times()
            figures[name].append(rate)
            used = after.user + after.system - before.user - before.system
            cpu[name].append(used / max(done, 1))
    for f in pending[0]:
        f.result()
    pool.shutdown()
    model.shutdown()
    result = {name: float(np.median(values)) for name, values in figures.items()}
    for name, values in cpu.items():
        result[f"{name}_cpu_ms"] = float(np.median(values)) * 1000
    return result


class CpuMeter:
    """CPU seconds spent by each process of the run (embedder, broker, Milvus, this one)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        times = os.times()
        now["bench (producer, image server, reader)"] = times.user + times.system
        return {name: value for name, value in now.items() if value is not None}

    def since_start(self) -> dict[str, float]:
        """CPU seconds per process since this meter was made."""
        now = self._now()
        return {
            name: round(now[name] - self._start[name], 1) for name in now if name in self._start
        }


def service_pids(home: Path) -> dict[str, int]:
    """The local broker's and Milvus server's pids, from `vitrine infra` pid files."""
    pids = {}
    for name, folder in (
        ("kafka broker", "kafka"),
        ("milvus-lite server", "milvus"),
        ("milvus server", "milvus-server"),
    ):
        for pid_file in sorted((home / folder).glob("*.pid"))[:1]:
            with contextlib.suppress(OSError, ValueError):
                pids[name] = int(pid_file.read_text().strip())
    return pids


def stage_seconds(port: int) -> dict[str, float]:
    """Seconds the embedder spent so far per stage (its /metrics), and batches formed."""
    import re
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        match = re.match(
            r'vitrine_embedder_stage_duration_seconds_sum\{stage="(\w+)"\} (\S+)', line
        )
        if match:
            out[match[1]] = float(match[2])
        elif line.startswith("vitrine_embedder_batch_size_events_count "):
            out["batches"] = float(line.split()[1])
    return out


def free_port() -> int:
    """A TCP port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summarise(results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """Throughput from the first send to the last write, freshness percentiles, outcomes."""
    fresh = [r["freshness_seconds"] for r in results]
    stamps = sorted(datetime.fromisoformat(r["embedded_at"]).timestamp() for r in results)
    span = stamps[-1] - started if stamps else float("nan")
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {
        "written": len(results),
        "outcomes": outcomes,
        "throughput_eps": round(len(results) / span, 1) if stamps else 0.0,
        "freshness_p50_s": round(percentile(fresh, 50), 3),
        "freshness_p95_s": round(percentile(fresh, 95), 3),
        "freshness_p99_s": round(percentile(fresh, 99), 3),
    }


def preload_collection(settings: VitrineSettings, model_dir: Path, rows: int) -> dict:
    """Create the benchmark's collection as the embedder would and store ``rows`` clustered
    rows in it, indexed and loaded (bench/preload.py); return what was built."""
    from vitrine.vectorstore import CollectionLayout, connect

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
    milvus = [pid for name, pid in service_pids(settings.home).items() if "milvus" in name]
    if milvus:
        waited = preload.wait_until_idle(milvus)
        preload.log(f"Milvus idle {waited:.0f} s after the index was built")
    keep = ("index_type", "M", "efConstruction", "nlist", "seconds_to_build_and_load")
    return {"rows": rows, **{k: v for k, v in index.items() if k in keep}}


def main() -> int:
    """Run the benchmark and print its figures (and a JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600, help="events per timed phase")
    parser.add_argument("--rate", type=float, default=None, help="offer this rate, no saturation")
    parser.add_argument("--load", type=float, default=0.7, help="freshness phase: share of max")
    parser.add_argument("--listings", type=int, default=None, help="distinct listings (mix)")
    parser.add_argument("--image-size", type=int, default=400, help="cover photo side, px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=int, default=50)
    parser.add_argument("--profile", default="cpu", help="model profile when no --model-dir")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--reference-seconds", type=float, default=30.0)
    parser.add_argument(
        "--cprofile", type=Path, default=None, help="write the embedder's cProfile stats here"
    )
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
        **VitrineSettings.names_for(name),
    )
    ensure_topics(settings)
    preloaded = preload_collection(settings, model_dir, args.preload) if args.preload else {}
    server = LoopbackImageServer()
    warm = 40
    phases = 1 if args.rate is not None else 2
    total = warm + phases * args.events
    listings = total if args.listings is None else warm + args.listings
    events = list(marketplace_events(server, listings, total, image_size=args.image_size))
    event_titles = [t for _, value in events if (t := json.loads(value).get("title"))]
    metrics_port = free_port()
    env = dict(os.environ)
    env.update(
        {
            # Every topic its own, the state topic too: bench listings never reach the real
            # catalogue's state.
            **{f"VITRINE_{k.upper()}": v for k, v in VitrineSettings.names_for(name).items()},
            "VITRINE_APP_ID": f"{name}-embedder",
            "VITRINE_MODEL_DIR": str(model_dir),
            "VITRINE_ALLOW_LOOPBACK_IMAGES": "true",
            "VITRINE_METRICS_PORT": str(metrics_port),
            "VITRINE_BATCH_SIZE": str(args.batch_size),
            "VITRINE_BATCH_WAIT_MS": str(args.batch_wait_ms),
            "VITRINE_LOG_LEVEL": "WARNING",
        }
    )
    embedder_settings = load(EmbedderSettings, **{"model_dir": model_dir})
    encoder = Encoder.load(model_dir, intra_op_threads=embedder_settings.ort_threads)

    def measure_reference() -> dict[str, float]:
        return reference(
            encoder,
            list(server.images.values()),
            event_titles,
            args.batch_size,
            embedder_settings.encode_threads,
            args.reference_seconds / 2,
        )

    ref_before = measure_reference()
    print(f"reference before the embedder: {ref_before}", flush=True)
    profiler = ["-m", "cProfile", "-o", str(args.cprofile)] if args.cprofile else []
    embedder = subprocess.Popen([sys.executable, *profiler, "-m", "app.cli", "embedder"], env=env)
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
                got.append(json.loads(msg.value() or b"{}"))
                last = time.monotonic()
            elif got and time.monotonic() - last > idle_s:
                break
        return got

    def send(batch: list[tuple[bytes, bytes]], rate: float) -> float:
        """Offer ``batch`` at ``rate`` (0: as fast as possible); returns the rate offered."""
        started = time.time()
        for key, value in pace(iter(batch), rate):
            # Stamp occurred_at at send time: freshness starts when the event exists.
            payload = json.loads(value)
            payload["occurred_at"] = datetime.now().astimezone().isoformat()
            producer.produce(settings.topic_events, key=key, value=json.dumps(payload).encode())
            producer.poll(0)
        producer.flush(30)
        return len(batch) / max(time.time() - started, 1e-9)

    def phase(batch: list[tuple[bytes, bytes]], rate: float) -> dict[str, Any]:
        started = time.time()
        meter = CpuMeter({"embedder": embedder.pid, **service_pids(base.home)})
        stages = stage_seconds(metrics_port)
        offered = send(batch, rate)
        print(f"sent {len(batch)} events at {offered:.1f}/s; waiting", flush=True)
        timeout = 120 + len(batch) / max(rate or 20.0, 1.0)
        summary = summarise(drain(len(batch), timeout), started)
        cpu = meter.since_start()
        after = stage_seconds(metrics_port)
        return {
            "offered_eps": round(offered, 1),
            **summary,
            "wall_s": round(time.time() - started, 1),
            "cpu_s": cpu,
            # Summed over concurrent tasks: fetch and decode overlap each other and encode.
            "stage_s": {k: round(v - stages.get(k, 0.0), 1) for k, v in after.items()},
        }

    load_before = os.getloadavg()
    try:
        send(events[:warm], 0)
        warmed = drain(warm, 180, idle_s=20.0)
        print(f"warm-up: {len(warmed)}/{warm} events through the embedder", flush=True)
        timed = events[warm:]
        if args.rate is None:
            saturation = phase(timed[: args.events], 0)
            maximum = saturation["throughput_eps"]
            print(f"saturation: {saturation}", flush=True)
            freshness = phase(timed[args.events :], args.load * maximum)
        else:
            saturation, maximum = None, None
            freshness = phase(timed, args.rate)
        print(f"freshness: {freshness}", flush=True)
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
    load_during = os.getloadavg()
    ref_after = measure_reference()
    # The machine is shared: take, per figure, the better of before and after the pipeline
    # phases, so a load that drops while the embedder runs cannot flatter the ratio.
    ref = {k: max(ref_before[k], ref_after[k]) for k in ref_after if not k.endswith("_cpu_ms")}
    ref.update({k: min(ref_before[k], ref_after[k]) for k in ref_after if k.endswith("_cpu_ms")})
    best = max(ref["overlapped"], ref["decode_then_encode"])
    # CPU per listing, whatever share of the shared machine each side got: the pipeline's
    # processes together (embedder, broker, Milvus, the bench's producer and image server)
    # against decode + encode alone.
    cpu_per_event = (
        sum(saturation["cpu_s"].values()) / saturation["written"]
        if saturation and saturation["written"]
        else None
    )
    report = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}",
        "load_average_1m_before_after": [round(load_before[0], 1), round(load_during[0], 1)],
        "model": encoder.manifest.model_version,
        "image_px": args.image_size,
        "batch_size": args.batch_size,
        "executor_threads": embedder_settings.encode_threads,
        "ort_intra_threads": embedder_settings.ort_threads,
        "saturation": saturation,
        "freshness": freshness,
        "reference_lps": {k: round(v, 1) for k, v in ref.items()},
        "reference_before_after": [
            {k: round(v, 1) for k, v in ref_before.items()},
            {k: round(v, 1) for k, v in ref_after.items()},
        ],
        "pipeline_to_reference": round(maximum / best, 3) if maximum and best else None,
        "cpu_ms_per_event_all_processes": round(cpu_per_event * 1000, 1) if cpu_per_event else None,
        "cpu_efficiency_vs_reference": (
            round(ref["overlapped_cpu_ms"] / (cpu_per_event * 1000), 3) if cpu_per_event else None
        ),
        "preloaded": preloaded,
        "milvus": "lite" if settings.milvus_is_lite else "server",
    }
    if saturation is not None:
        print(
            f"max sustained {maximum} ev/s "
            f"({saturation['written']}/{args.events} written, offered {saturation['offered_eps']})"
        )
    print(
        f"at {freshness['offered_eps']} ev/s offered: sustained {freshness['throughput_eps']} "
        f"ev/s, freshness p50 {freshness['freshness_p50_s']} s, "
        f"p95 {freshness['freshness_p95_s']} s, p99 {freshness['freshness_p99_s']} s\n"
        f"reference (listings/s): decode+encode overlapped {ref['overlapped']:.1f}, "
        f"decode then encode {ref['decode_then_encode']:.1f}, encoder only "
        f"{ref['encoder_only']:.1f}\n"
        f"pipeline/reference {report['pipeline_to_reference']}\n"
        f"CPU ms per listing: decode+encode {ref['overlapped_cpu_ms']:.1f}, pipeline (all "
        f"processes) {report['cpu_ms_per_event_all_processes']}; "
        f"CPU efficiency {report['cpu_efficiency_vs_reference']}"
    )
    for label, figures in (("saturation", saturation), ("freshness", freshness)):
        if figures and figures["written"]:
            per_event = {
                k: round(v / figures["written"] * 1000, 1) for k, v in figures["cpu_s"].items()
            }
            print(
                f"{label}: CPU ms per written event by process {per_event}, "
                f"wall {figures['wall_s']} s"
            )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
