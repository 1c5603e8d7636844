"""`vitrine demo` end to end in short mode, observed from outside while it runs.

One demo run (real broker, real milvus-lite server, a stub model) serves three checks: a real
Prometheus scrapes the embedder and the recall worker it starts; the Grafana dashboard names only
metrics those services really export; and the summary it prints agrees with Milvus and the topics.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.stub_model import build_stub_model
from vitrine.infra.process import port_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy/grafana/dashboards/vitrine.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode()


def prom_value(prom: str, query: str) -> float:
    """The single value of an instant query, 0 when it has no result."""
    try:
        query_string = urllib.parse.urlencode({"query": query})
        body = json.loads(http_get(f"{prom}/api/v1/query?{query_string}"))
    except OSError:
        return 0.0
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def sample_total(metrics_text: str, name: str) -> float:
    """Sum of all samples of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class DemoRun:
    name: str
    env: dict[str, str]
    summary: dict[str, Any]
    ports: dict[str, int]
    live_metrics: dict[str, str] = field(default_factory=dict)
    prometheus: dict[str, float] = field(default_factory=dict)
    explorer: dict[str, Any] = field(default_factory=dict)  # its /api/live while the demo ran


@pytest.fixture(scope="module")
def demo_run(
    kafka: str, milvus: str, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> DemoRun:
    tmp = tmp_path_factory.mktemp("demo")
    name = f"t_demo_{os.getpid()}_{int(time.time())}"
    ports = {"embedder": free_port(), "recall": free_port(), "prometheus": free_port(),
             "explorer": free_port()}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env.update(
        VITRINE_KAFKA_BOOTSTRAP=kafka,
        VITRINE_MILVUS_URI=milvus,
        VITRINE_HOME=str(tmp / "home"),
        VITRINE_MILVUS_COLLECTION=name,
        VITRINE_TOPIC_EVENTS=f"{name}.events",
        VITRINE_TOPIC_EMBEDDED=f"{name}.embedded",
        VITRINE_TOPIC_DLQ=f"{name}.dlq",
        VITRINE_TOPIC_RECALL_REQUESTS=f"{name}.recall.requests",
        VITRINE_TOPIC_RECALL_REPLIES=f"{name}.recall.replies",
        VITRINE_APP_ID=f"{name}-embedder",
        VITRINE_RECALL_GROUP_ID=f"{name}-recall",
    )
    model = build_stub_model(tmp / "model")
    config = tmp / "prometheus.yml"
    jobs = {"vitrine-embedder": ports["embedder"], "vitrine-recall": ports["recall"]}
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        + "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
            for job, port in jobs.items()
        )
    )
    prometheus = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    summary_path = tmp / "summary.json"
    demo = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--duration", "25", "--rate", "20",
         "--listings", "60", "--poison-share", "0.05", "--mismatch-share", "0.2",
         "--recall-every", "2", "--model-dir", str(model),
         "--embedder-metrics-port", str(ports["embedder"]),
         "--recall-metrics-port", str(ports["recall"]),
         "--explorer-port", str(ports["explorer"]),
         "--summary-json", str(summary_path), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    run = DemoRun(name, env, {}, ports)
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and demo.poll() is None:
            time.sleep(1)
            try:
                embedder = http_get(f"http://127.0.0.1:{ports['embedder']}/metrics")
                recall = http_get(f"http://127.0.0.1:{ports['recall']}/metrics")
            except OSError:
                continue
            fresh = sample_total(embedder, "vitrine_embedder_freshness_seconds_count")
            asked = sample_total(recall, "vitrine_recall_requests_total")
            run.prometheus = {
                "freshness_count": prom_value(
                    prom, "sum(vitrine_embedder_freshness_seconds_count)"
                ),
                "freshness_p99": prom_value(
                    prom,
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(vitrine_embedder_freshness_seconds_bucket[1m])))",
                ),
                "recall_requests": prom_value(prom, "sum(vitrine_recall_requests_total)"),
            }
            if fresh > 0 and asked > 0:
                run.live_metrics = {"embedder": embedder, "recall": recall}
            try:
                live = json.loads(http_get(f"http://127.0.0.1:{ports['explorer']}/api/live"))
                if live.get("catalog_listings") and live.get("freshness_p50_seconds"):
                    run.explorer = live
            except (OSError, ValueError):
                pass
            if (
                run.live_metrics
                and run.explorer
                and all(value > 0 for value in run.prometheus.values())
            ):
                break
        output, _ = demo.communicate(timeout=240)
        assert demo.returncode == 0, output
        run.summary = json.loads(summary_path.read_text())
    finally:
        if demo.poll() is None:
            demo.kill()
        prometheus.terminate()
        prometheus.wait(timeout=30)
    return run


def _topic_records(kafka: str, topic: str, start: dict[str, int]) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"check-{topic}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        parts = [TopicPartition(topic, int(p), int(o)) for p, o in start.items()]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(parts)}
            if all(positions[p] >= ends[p] for p in ends):
                break
            records.extend(m for m in consumer.consume(500, timeout=1) if m.error() is None)
        return records
    finally:
        consumer.close()


def test_summary_agrees_with_milvus_and_topics(demo_run: DemoRun, kafka: str, milvus: str) -> None:
    from vitrine.vectorstore import open_client

    summary = demo_run.summary
    assert summary["drained"] is True
    assert summary["delivery_failures"] == 0
    assert summary["events_produced"] > 100
    client = open_client(milvus)
    try:
        rows = client.query(demo_run.name, filter="", output_fields=["count(*)"],
                            consistency_level="Strong")[0]["count(*)"]  # fmt: skip
        client.drop_collection(demo_run.name)
    finally:
        client.close()
    assert summary["milvus_rows"] == rows == summary["listings_live"]

    embedded = _topic_records(kafka, f"{demo_run.name}.embedded",
                              summary["start_offsets"]["embedded"])  # fmt: skip
    assert len(embedded) == summary["events_written"]
    outcomes: dict[str, int] = {}
    for record in embedded:
        outcome = json.loads(record.value())["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes == summary["outcomes"]

    dead = _topic_records(kafka, f"{demo_run.name}.dlq", summary["start_offsets"]["dlq"])
    reasons: dict[str, int] = {}
    for record in dead:
        reason = dict(record.headers())["vitrine.dlq.reason"].decode()
        reasons[reason] = reasons.get(reason, 0) + 1
    assert summary["dead_letters"] == {"total": len(dead), "by_reason": reasons}
    assert summary["dead_letters"]["total"] == summary["poison_produced"] > 0
    assert set(reasons) <= {"malformed_json", "not_found"}

    recall = summary["recall"]
    assert recall["requests"] >= 3 and recall["by_status"].get("ok", 0) >= 1
    assert summary["freshness_s"]["p50"] is not None


def test_prometheus_scrapes_freshness_and_recall(demo_run: DemoRun) -> None:
    assert demo_run.prometheus["freshness_count"] > 0
    assert demo_run.prometheus["recall_requests"] > 0
    assert demo_run.prometheus["freshness_p99"] > 0


def test_dashboard_names_only_exported_metrics(demo_run: DemoRun) -> None:
    assert demo_run.live_metrics, "never saw both services' /metrics with samples"
    exported: set[str] = set()
    for text in demo_run.live_metrics.values():
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                exported.add(line.split()[2])
            elif line and not line.startswith("#"):
                exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bvitrine_[a-z0-9_]+", target["expr"])
    }
    assert queried, "the dashboard queries no Vitrine metric"
    missing = sorted(queried - exported)
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"


def test_the_explorer_ran_with_the_demo(demo_run: DemoRun) -> None:
    # The page knew the demo's listings and read the embedder's freshness from its metrics.
    assert demo_run.explorer["catalog_listings"] > 0
    assert demo_run.explorer["freshness_p50_seconds"] > 0
    assert demo_run.explorer["error"] is None


def test_demo_stopped_what_it_started(demo_run: DemoRun) -> None:
    assert not port_open("127.0.0.1", demo_run.ports["embedder"])
    assert not port_open("127.0.0.1", demo_run.ports["recall"])
