"""The demo run: infrastructure, model, embedder, recall worker, a synthetic marketplace
streaming events, live figures, and a summary — everything started here is stopped here."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.demo.services import DemoError, ServiceProcess, ensure_model, tail
from app.demo.stats import RunStats, render_recall, render_status, render_summary, summary
from vitrine.infra.kafka import LocalKafka
from vitrine.infra.milvus import LocalMilvus
from vitrine.kafka_config import admin_config, reader_config
from vitrine.settings import VitrineSettings

DLQ_REASON_HEADER = "vitrine.dlq.reason"


@dataclass(frozen=True)
class DemoOptions:
    """What `vitrine demo` was asked to do."""

    duration_s: float = 60.0
    rate: float = 20.0
    listings: int = 300
    seed: int = 7
    mismatch_share: float = 0.1
    poison_share: float = 0.01
    recall_every_s: float = 5.0
    drain_timeout_s: float = 60.0
    model_dir: Path | None = None
    train_listings: int = 6000
    train_epochs: int = 8
    embedder_metrics_port: int = 9464
    recall_metrics_port: int = 9465
    explorer_port: int = 8765
    summary_json: Path | None = None
    quiet: bool = False


class Marketplace:
    """Produces the synthetic marketplace's events (plus a little poison) at a fixed rate."""

    def __init__(self, settings: VitrineSettings, options: DemoOptions, stats: RunStats) -> None:
        from confluent_kafka import Producer

        from app.demo.marketplace import LoopbackImageServer, marketplace_events
        from vitrine.kafka_config import producer_config

        self.settings = settings
        self.options = options
        self.stats = stats
        self.server = LoopbackImageServer()
        self.producer = Producer(producer_config(settings))
        self.listings: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self._lock = threading.Lock()  # listings/deleted are written here, read by the monitor
        self._stop = threading.Event()
        self._rng = random.Random(options.seed)
        # Versions above every earlier run's: a second run edits the same listings.
        version_base = int(time.time() * 1000)
        self._events = marketplace_events(
            self.server,
            options.listings,
            10**9,
            seed=options.seed,
            mismatch_share=options.mismatch_share,
            version_base=version_base,
        )
        self._version_base = version_base
        self.thread = threading.Thread(target=self._run, name="demo-producer", daemon=True)

    def _poison(self, n: int) -> tuple[bytes, bytes]:
        """A malformed payload or an event whose cover is a 404, alternately."""
        if n % 2 == 0:
            return f"demo-poison-{n}".encode(), b'{"listing_id": "demo-poison", "version": '
        listing_id = f"demo-poison-{n}"
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"poison-{uuid.uuid4().hex}",
            "event_type": "created",
            "listing_id": listing_id,
            "version": self._version_base + 1,
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "title": "listing whose photo is gone",
            "image_urls": [self.server.url(f"/missing/{n}.jpg")],
            "category": "unknown",
            "price": {"amount": 1.0, "currency": "EUR"},
            "seller_id": "seller-0",
            "marketplace": "demo",
        }
        return listing_id.encode(), json.dumps(event).encode()

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        poison = 0
        while not self._stop.is_set():
            due = started + n / self.options.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._rng.random() < self.options.poison_share:
                key, value = self._poison(poison)
                poison += 1
            else:
                key, value = next(self._events)
                event = json.loads(value)
                with self._lock:
                    if event["event_type"] == "deleted":
                        self.deleted.add(event["listing_id"])
                    else:
                        self.deleted.discard(event["listing_id"])
                        self.listings[event["listing_id"]] = {
                            "title": event["title"],
                            "category": event["category"],
                        }
            self._produce(key, value)
            n += 1
        left = self.producer.flush(30)
        self.stats.delivery_failed += left  # still queued after 30 s: never acknowledged

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Counted when the broker acknowledged the event, not when it was handed to the client.
        if err is not None:
            self.stats.delivery_failed += 1
        elif (msg.key() or b"").startswith(b"demo-poison-"):
            self.stats.produced_poison += 1
            self.stats.produced += 1
        else:
            self.stats.produced += 1

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Copies of the listings produced so far and of those deleted."""
        with self._lock:
            return dict(self.listings), set(self.deleted)

    def _produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(
                    self.settings.topic_events, key=key, value=value, on_delivery=self._on_delivery
                )
                self.producer.poll(0)
                return
            except BufferError:  # local queue full: back off, never drop
                self.producer.poll(0.1)

    def start(self) -> None:
        """Start producing in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop producing and flush what was produced."""
        self._stop.set()
        self.thread.join(timeout=60)

    def close(self) -> None:
        """Stop serving images."""
        self.server.close()


class Monitor:
    """Reads this run's embedded events and dead letters back from Kafka."""

    def __init__(self, settings: VitrineSettings, stats: RunStats) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.stats = stats
        self.consumer = Consumer(
            reader_config(settings, f"vitrine-demo-monitor-{uuid.uuid4().hex[:8]}")
        )
        self.topics = {"embedded": settings.topic_embedded, "dlq": settings.topic_dlq}
        self.start_offsets: dict[str, dict[int, int]] = {}
        assignment = []
        for role, topic in self.topics.items():
            metadata = self.consumer.list_topics(topic, timeout=10).topics[topic]
            self.start_offsets[role] = {}
            for partition in metadata.partitions:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                self.start_offsets[role][partition] = high
                assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)

    def poll(self, timeout_s: float = 0.2) -> None:
        """Fold newly arrived records into the stats."""
        for msg in self.consumer.consume(1000, timeout=timeout_s):
            if msg.error() is not None:
                continue
            if msg.topic() == self.topics["embedded"]:
                try:
                    event = json.loads(msg.value() or b"null")
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.stats.on_embedded(event)
            else:
                headers = dict(msg.headers() or [])
                reason = headers.get(DLQ_REASON_HEADER) or b"unknown"
                if isinstance(reason, bytes):
                    reason = reason.decode(errors="replace")
                self.stats.on_dead_letter(str(reason))

    def caught_up(self) -> bool:
        """True when every assigned partition has been read to its current end."""
        from confluent_kafka import TopicPartition

        for tp in self.consumer.position(self.consumer.assignment()):
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=10
            )
            if tp.offset < high and high > 0:
                return False
        return True

    def close(self) -> None:
        """Leave without committing anything."""
        self.consumer.close()


def wait_for_group(
    settings: VitrineSettings, group_id: str, service: ServiceProcess, timeout_s: float = 180.0
) -> None:
    """Block until ``group_id`` has a stable member (the service is consuming)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(settings))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        service.check()
        try:
            group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=5)
            if group.state == ConsumerGroupState.STABLE and group.members:
                return
        except Exception:  # the group does not exist yet
            pass
        time.sleep(0.5)
    raise DemoError(
        f"{service.name} did not join group {group_id!r} in {timeout_s:.0f} s:\n"
        f"{tail(service.log_file)}"
    )


class LagProbe:
    """Reads how far the embedder's group has committed on the events topic; one connection,
    reused while the demo waits for the embedder to drain."""

    def __init__(self, settings: VitrineSettings, group_id: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        # Joins no group: committed() and watermarks only read the group's offsets.
        self.consumer = Consumer(reader_config(settings, group_id))
        topic = settings.topic_events
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.partitions = [TopicPartition(topic, p) for p in partitions]

    def lag(self) -> int:
        """Events on the events topic not yet committed by the group."""
        lag = 0
        for tp in self.consumer.committed(self.partitions, timeout=10):
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            committed = tp.offset if tp.offset >= 0 else low
            lag += max(0, high - committed)
        return lag

    def close(self) -> None:
        """Close the connection."""
        self.consumer.close()


def count_rows(settings: VitrineSettings) -> int | None:
    """Rows in the listings collection (None when it does not exist)."""
    from vitrine.vectorstore import connect

    client = connect(settings)
    try:
        if not client.has_collection(settings.milvus_collection):
            return None
        rows = client.query(
            settings.milvus_collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])
    finally:
        client.close()


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; return the summary figures (also printed)."""
    from recall.settings import RecallSettings
    from streams.settings import EmbedderSettings
    from vitrine.settings import load
    from vitrine.topics import ensure_topics

    settings = load(EmbedderSettings)
    recall_settings = load(RecallSettings)
    model_dir = options.model_dir or settings.resolved_model_dir
    say = (lambda *_: None) if options.quiet else print
    started_infra: list[Any] = []
    services: list[ServiceProcess] = []
    stats = RunStats()
    marketplace: Marketplace | None = None
    monitor: Monitor | None = None
    client: Any = None
    started = time.monotonic()
    try:
        for local in (LocalKafka(settings), LocalMilvus(settings)):
            managed = (
                settings.manages_kafka
                if isinstance(local, LocalKafka)
                else (settings.manages_milvus)
            )
            if managed and not local.answering():
                started_infra.append(local)  # before start: a start that fails half-way is stopped
                local.start()
        ensure_topics(settings)
        ensure_model(
            model_dir,
            settings.home / "demo",
            listings=options.train_listings,
            epochs=options.train_epochs,
            seed=options.seed,
        )
        model_version = json.loads((model_dir / "manifest.json").read_text())["model_version"]

        env = {
            **os.environ,
            "VITRINE_MODEL_DIR": str(model_dir),
            "VITRINE_ALLOW_LOOPBACK_IMAGES": "true",
            "HF_HUB_OFFLINE": "1",
        }
        logs = settings.home / "demo" / "logs"
        embedder = ServiceProcess(
            "embedder",
            ["embedder"],
            {**env, "VITRINE_METRICS_PORT": str(options.embedder_metrics_port)},
            logs / "embedder.log",
        )
        services.append(embedder)
        recall_worker = ServiceProcess(
            "recall worker",
            ["recall"],
            {**env, "VITRINE_METRICS_PORT": str(options.recall_metrics_port)},
            logs / "recall.log",
        )
        services.append(recall_worker)
        say(f"Starting the embedder (model {model_version}) and the recall worker; logs in {logs}")
        if options.explorer_port:
            metrics_url = (
                f"http://127.0.0.1:{options.embedder_metrics_port}/metrics"
                if options.embedder_metrics_port
                else ""
            )
            explorer = ServiceProcess(
                "explorer",
                ["explorer", "--port", str(options.explorer_port)],
                {**env, "VITRINE_METRICS_PORT": "0", "VITRINE_EXPLORER_METRICS_URL": metrics_url},
                logs / "explorer.log",
            )
            services.append(explorer)
        wait_for_group(settings, settings.app_id, embedder)
        wait_for_group(settings, recall_settings.recall_group_id, recall_worker)
        if options.explorer_port:
            say(f"  explorer: http://127.0.0.1:{options.explorer_port}/ (open it in a browser)")
        for name, port in (
            ("embedder", options.embedder_metrics_port),
            ("recall", options.recall_metrics_port),
        ):
            if port:
                say(f"  {name} metrics: http://127.0.0.1:{port}/metrics")

        from recall.client import RecallClient
        from recall.errors import RecallError

        client = RecallClient(recall_settings)
        monitor = Monitor(settings, stats)
        marketplace = Marketplace(settings, options, stats)
        say(
            f"Streaming a synthetic marketplace at {options.rate:g} events/s for "
            f"{options.duration_s:g} s (Ctrl-C stops early)..."
        )
        run_started = time.monotonic()
        marketplace.start()
        next_status = next_recall = run_started + 1
        last_written, last_time = 0, run_started
        interactive = sys.stdout.isatty() and not options.quiet
        try:
            while time.monotonic() - run_started < options.duration_s:
                monitor.poll()
                for service in services:
                    service.check()
                now = time.monotonic()
                if now >= next_status:
                    rate = (stats.written - last_written) / max(now - last_time, 1e-6)
                    last_written, last_time = stats.written, now
                    line = render_status(stats, now - run_started, rate)
                    if interactive:
                        print("\r" + line, end="", flush=True)
                    elif int(now - run_started) % 5 == 0:
                        say(line)
                    next_status = now + 1
                listings, deleted = marketplace.snapshot()
                candidates = sorted(stats.embedded_listings - deleted)
                if now >= next_recall and candidates:
                    seed = random.Random(int(now)).choice(candidates)
                    asked = time.monotonic()
                    try:
                        reply = client.similar(seed, k=5, timeout=5.0)
                        status = str(reply.status)
                    except RecallError as exc:
                        reply, status = None, exc.reason
                    latency = time.monotonic() - asked
                    stats.on_recall(status, latency)
                    if reply is not None:
                        text = render_recall(seed, reply, listings, latency)
                        say(("\n" if interactive else "") + text)
                    next_recall = now + options.recall_every_s
        except KeyboardInterrupt:
            say("\nInterrupted: draining what was produced...")
        marketplace.stop()
        if interactive:
            print()
        say(f"Producer stopped after {stats.produced} events; waiting for the embedder to drain...")
        probe = LagProbe(settings, settings.app_id)
        deadline = time.monotonic() + options.drain_timeout_s
        while time.monotonic() < deadline:
            for service in services:
                service.check()
            monitor.poll(0.5)
            if probe.lag() == 0 and monitor.caught_up():
                break
        monitor.poll(1.0)
        figures = summary(
            stats,
            duration_s=time.monotonic() - run_started,
            milvus_rows=count_rows(settings),
            model_version=model_version,
        )
        listings, deleted = marketplace.snapshot()
        figures["listings_live"] = len(set(listings) - deleted)
        figures["start_offsets"] = monitor.start_offsets
        figures["drained"] = probe.lag() == 0
        probe.close()
        return figures
    finally:
        if client is not None:
            client.close()
        if monitor is not None:
            monitor.close()
        if marketplace is not None:
            marketplace.stop()
            marketplace.close()
        for service in services:
            service.stop()
        for local in started_infra:
            local.stop()
        if started_infra:
            say("Stopped the local Kafka broker and milvus-lite server started by the demo.")
        say(f"(demo ran {time.monotonic() - started:.0f} s in all)")


def print_summary(figures: dict[str, Any], summary_json: Path | None) -> None:
    """Print the summary, and write it as JSON when asked."""
    print(render_summary(figures))
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
