"""The milvus-lite server is shared: one process writes, another searches the same data."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from vitrine.settings import InfraSettings

pytestmark = pytest.mark.integration

WRITER = textwrap.dedent(
    """
    import sys
    from pymilvus import DataType
    from vitrine.vectorstore import open_client
    uri, name = sys.argv[1], sys.argv[2]
    client = open_client(uri)
    schema = client.create_schema(auto_id=False)
    schema.add_field("listing_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    schema.add_field("category", DataType.VARCHAR, max_length=64)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    rows = [
        {"listing_id": f"l{i}", "embedding": [1.0, float(i), 0.0, 0.0],
         "category": "shoes" if i % 2 else "bags"}
        for i in range(20)
    ]
    client.upsert(name, rows)
    print(client.get_collection_stats(name)["row_count"])
    """
)

SEARCHER = textwrap.dedent(
    """
    import json, sys
    from vitrine.vectorstore import open_client
    uri, name = sys.argv[1], sys.argv[2]
    client = open_client(uri)
    client.load_collection(name)
    hits = client.search(
        name, data=[[1.0, 3.0, 0.0, 0.0]], limit=3, filter='category == "shoes"',
        output_fields=["category"], consistency_level="Strong",
    )[0]
    print(json.dumps([[h["id"], h["entity"]["category"]] for h in hits]))
    """
)


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def _exact_top3(query: list[float]) -> list[str]:
    import numpy as np

    q = np.asarray(query) / np.linalg.norm(query)
    scored = []
    for i in range(1, 20, 2):  # the "shoes" rows
        v = np.asarray([1.0, float(i), 0.0, 0.0])
        scored.append((float(q @ (v / np.linalg.norm(v))), f"l{i}"))
    return [name for _, name in sorted(scored, reverse=True)[:3]]


def test_two_processes_share_one_server(milvus: str, unique_name: str) -> None:
    from vitrine.vectorstore import open_client

    try:
        _run(WRITER, milvus, unique_name)
        hits = json.loads(_run(SEARCHER, milvus, unique_name))
        assert [h[0] for h in hits] == _exact_top3([1.0, 3.0, 0.0, 0.0])
        assert {h[1] for h in hits} == {"shoes"}
    finally:
        client = open_client(milvus)
        client.drop_collection(unique_name)
        client.close()


def test_a_local_server_keeps_to_its_own_ports(milvus: str, infra_settings: InfraSettings) -> None:
    """Embedded etcd listens on the home's ports, so two local servers can run side by side."""
    import socket

    from vitrine.infra.milvus import ETCD_PEER_PORT_OFFSET, MilvusStandalone, local_milvus

    service = local_milvus(infra_settings)
    if not isinstance(service, MilvusStandalone) or not infra_settings.manages_milvus:
        pytest.skip("needs the local Milvus server (VITRINE_MILVUS_KIND=server)")
    config = (service.config_file.parent / "embed-etcd.yaml").read_text()
    peer = infra_settings.milvus_port + ETCD_PEER_PORT_OFFSET
    assert f"listen-peer-urls: http://127.0.0.1:{peer}" in config
    assert f"listen-client-urls: http://127.0.0.1:{infra_settings.milvus_port + 1}" in config
    for port in (peer, infra_settings.milvus_port + 1):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the server's etcd answers there
    assert peer in service.ports()


def test_a_port_left_in_time_wait_is_free_for_the_next_server() -> None:
    """`vitrine infra down` then `up` at once: the old server's ports linger in TIME_WAIT."""
    import socket

    from vitrine.infra.milvus import bind_reusable

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    peer.recv(1)
    peer.close()
    listener.close()
    plain = socket.socket()
    with pytest.raises(OSError):  # what the `milvus` package's own check does
        plain.bind(("127.0.0.1", port))
    plain.close()
    sock = bind_reusable(port)
    assert sock is not None
    sock.close()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    assert bind_reusable(taken.getsockname()[1]) is None  # a live listener still wins
    taken.close()
