"""Fetching the broker jars: once with Maven, then from the cache with no Maven and no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitrine.errors import InfraError
from vitrine.infra import kafka as kafka_module
from vitrine.infra.kafka import LocalKafka
from vitrine.settings import InfraSettings, load


def _settings(tmp_path: Path) -> InfraSettings:
    return load(InfraSettings, home=tmp_path / "home", cache_dir=tmp_path / "cache")


def test_cached_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalKafka(_settings(tmp_path))
    broker.libs.mkdir(parents=True)
    (broker.libs / ".complete").write_text(broker.version)
    calls: list[object] = []
    monkeypatch.setattr(kafka_module.shutil, "which", lambda name: calls.append(name))
    monkeypatch.setattr(kafka_module.subprocess, "run", lambda *a, **k: calls.append(a))
    broker.fetch()
    assert calls == []  # neither looked for Maven nor ran anything


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalKafka(_settings(tmp_path))
    monkeypatch.setattr(kafka_module.shutil, "which", lambda name: None)
    with pytest.raises(InfraError, match="Maven"):
        broker.fetch()
    assert not broker.fetched()


def test_a_failed_fetch_leaves_no_half_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    broker = LocalKafka(_settings(tmp_path))
    monkeypatch.setattr(kafka_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(
        kafka_module.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "Could not resolve artifact"),
    )
    with pytest.raises(InfraError, match="Could not resolve artifact"):
        broker.fetch()
    assert not broker.fetched() and not broker.libs.exists()


def test_a_stale_pid_file_names_no_process(tmp_path: Path) -> None:
    import os

    from vitrine.infra.process import read_pid

    pid_file = tmp_path / "broker.pid"
    pid_file.write_text(str(os.getpid()))  # alive, but not a broker of this home
    assert read_pid(pid_file, str(tmp_path / "server.properties")) is None
    own_marker = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert read_pid(pid_file, own_marker) == os.getpid()


def test_cluster_id_never_starts_with_a_dash() -> None:
    from vitrine.infra.kafka import new_cluster_id

    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # the first encodes to "-AAA..."
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "A" * 22
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))


def test_cluster_nodes_get_their_own_ports_and_files(tmp_path: Path) -> None:
    settings = load(
        InfraSettings,
        home=tmp_path / "home",
        kafka_brokers=3,
        kafka_port=25000,
        kafka_controller_port=25001,
    )
    cluster = LocalKafka(settings)
    assert [n.ports() for n in cluster.nodes] == [[25000, 25001], [25010, 25011], [25020, 25021]]
    assert len({n.properties for n in cluster.nodes}) == 3
    assert settings.bootstrap_servers == "127.0.0.1:25000,127.0.0.1:25010,127.0.0.1:25020"
    assert cluster.cluster_id() == cluster.cluster_id()  # drawn once per home
    cluster.nodes[1]._write_config()
    text = cluster.nodes[1].properties.read_text()
    assert "node.id=2" in text
    assert "controller.quorum.voters=1@127.0.0.1:25001,2@127.0.0.1:25011,3@127.0.0.1:25021" in text
    assert "default.replication.factor=3" in text and "min.insync.replicas=2" in text


def test_nodes_starting_together_get_one_cluster_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start` formats the three nodes from three threads at once; a slow draw widens the
    window in which each could otherwise draw its own id."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import vitrine.infra.kafka as kafka

    settings = load(InfraSettings, home=tmp_path / "home", kafka_brokers=3)
    cluster = LocalKafka(settings)
    draw = kafka.new_cluster_id
    barrier = threading.Barrier(3)

    def slow_draw() -> str:
        time.sleep(0.2)
        return draw()

    def node_formats(_: int) -> str:
        barrier.wait()
        return cluster.cluster_id()

    monkeypatch.setattr(kafka, "new_cluster_id", slow_draw)
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(node_formats, range(3)))
    assert len(set(ids)) == 1
    assert (settings.home / "kafka" / "cluster.id").read_text().strip() == ids[0]
