"""The local Milvus every process connects to: milvus-lite (default) or Milvus standalone.

``VITRINE_MILVUS_KIND=lite``: milvus-lite opened from a file locks it to one process, so Vitrine
runs the milvus-lite binary as a gRPC server on 127.0.0.1 and every process connects with
``MilvusClient(uri=...)``. The Python launcher that ships with milvus-lite leaves its binary
running when the launcher exits, so Vitrine starts the binary itself and keeps its pid.

``VITRINE_MILVUS_KIND=server``: the real Milvus standalone binary from the PyPI package
``milvus`` (2.3.x: embedded etcd, local storage, rocksmq) — HNSW, aliases, real consistency
levels, no Docker. Its data, config and logs live under ``VITRINE_HOME/milvus-server``; it
listens on ``VITRINE_MILVUS_PORT`` (the proxy clients talk to) and the next eleven ports (etcd,
coordinators, nodes, metrics, etcd peer). Vitrine writes the config with the package's own
template and starts the binary itself, as for milvus-lite.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess  # noqa: F401  (tests patch vitrine.infra.milvus.subprocess.Popen)
import urllib.request
import warnings
from pathlib import Path

from vitrine.errors import InfraError
from vitrine.infra.service import LocalService, child_env
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)

DB_NAME = "vitrine.db"  # milvus-lite allows [A-Za-z0-9._-], at most 36 characters

#: Ports of Milvus standalone besides the proxy, as offsets from VITRINE_MILVUS_PORT.
SERVER_PORT_OFFSETS = {
    "etcd_port": 1,
    "root_coord_port": 2,
    "proxy_internal_port": 3,
    "query_coord_port": 4,
    "query_node_port": 5,
    "index_coord_port": 6,
    "index_node_port": 7,
    "data_coord_port": 8,
    "data_node_port": 9,
}
METRICS_PORT_OFFSET = 10
#: The embedded etcd's peer port. Left alone, embedded etcd listens on 2379/2380 whatever the
#: Milvus config says, so a second local server (another home, a benchmark's) cannot start.
ETCD_PEER_PORT_OFFSET = 11

EMBED_ETCD_CONFIG = """\
# Written by vitrine infra: the embedded etcd on this home's ports, not on 2379/2380.
name: default
listen-client-urls: http://127.0.0.1:{client}
advertise-client-urls: http://127.0.0.1:{client}
listen-peer-urls: http://127.0.0.1:{peer}
initial-advertise-peer-urls: http://127.0.0.1:{peer}
initial-cluster: default=http://127.0.0.1:{peer}
"""


def bind_reusable(port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:``port`` with SO_REUSEADDR, or None if it is taken.

    The ``milvus`` package checks each port by binding it without SO_REUSEADDR, so a port
    still in TIME_WAIT from the previous server (for a minute after ``vitrine infra down``)
    fails that check although the server itself, whose listeners reuse addresses, binds it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def _probe_list_collections(uri: str, token: str, timeout_s: float) -> bool:
    from vitrine.vectorstore import open_client

    client = open_client(uri, token, timeout_s)
    try:
        client.list_collections(timeout=timeout_s)
    finally:
        client.close()
    return True


class MilvusLite(LocalService):
    """The milvus-lite server of this home."""

    name = "milvus"
    probe_interval_s = 0.3
    stop_timeout_s = 20.0

    def __init__(self, settings: VitrineSettings) -> None:
        root = settings.home / "milvus"
        self.db_file = root / DB_NAME
        super().__init__(settings, root, self.db_file)
        self.stdout_file = root / "milvus.log"

    @property
    def managed(self) -> bool:
        return self.settings.manages_milvus

    @property
    def where(self) -> str:
        return self.settings.milvus_endpoint

    def ports(self) -> list[int]:
        return [self.settings.milvus_port]

    def port_hint(self) -> str:
        return "set VITRINE_MILVUS_PORT, or point VITRINE_MILVUS_URI at that server if it is Milvus"

    def probe(self, timeout_s: float) -> bool:
        return _probe_list_collections(self.where, self.settings.milvus_token, timeout_s)

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        with warnings.catch_warnings():
            # milvus-lite 2.5.1 imports the deprecated pkg_resources; nothing we can change.
            warnings.simplefilter("ignore", UserWarning)
            from milvus_lite.server import Server

        self.root.mkdir(parents=True, exist_ok=True)
        server = Server(str(self.db_file), address=f"127.0.0.1:{self.settings.milvus_port}")
        if not server.init():
            raise InfraError("the milvus-lite package has no server binary on this platform")
        bin_dir = os.path.dirname(server.milvus_bin)
        env = child_env(LD_LIBRARY_PATH=bin_dir + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
        return [str(a) for a in server.args], env, self.root


class MilvusStandalone(LocalService):
    """Milvus standalone (the ``milvus`` package's binary) serving this home."""

    name = "milvus"
    probe_interval_s = 1.0
    stop_timeout_s = 30.0

    def __init__(self, settings: VitrineSettings) -> None:
        root = settings.home / "milvus-server"
        # The binary is unpacked under the data dir, so its path marks this home's process.
        self.binary = root / "bin" / "milvus"
        super().__init__(settings, root, self.binary)
        self.stdout_file = root / "logs" / "milvus-stdout.log"
        self.config_file = root / "configs" / "milvus.yaml"

    @property
    def managed(self) -> bool:
        return self.settings.manages_milvus

    @property
    def where(self) -> str:
        return self.settings.milvus_endpoint

    @property
    def metrics_port(self) -> int:
        """The HTTP port of /healthz and /metrics."""
        return self.settings.milvus_port + METRICS_PORT_OFFSET

    def ports(self) -> list[int]:
        base = self.settings.milvus_port
        offsets = [*SERVER_PORT_OFFSETS.values(), METRICS_PORT_OFFSET, ETCD_PEER_PORT_OFFSET]
        return [base, *(base + o for o in offsets)]

    def port_hint(self) -> str:
        return (
            "the Milvus server uses VITRINE_MILVUS_PORT and the next 11 ports: set another "
            "VITRINE_MILVUS_PORT, or point VITRINE_MILVUS_URI at that server if it is Milvus"
        )

    def log_files(self) -> list[Path]:
        return [self.stdout_file, self.root / "logs" / "milvus-stderr.log"]

    def probe(self, timeout_s: float) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if b"OK" not in resp.read():
                return False
        return _probe_list_collections(self.where, self.settings.milvus_token, timeout_s)

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        try:
            import milvus as milvus_package
        except ImportError as exc:
            raise InfraError(
                "VITRINE_MILVUS_KIND=server needs the `milvus` package (pip install "
                "'milvus==2.3.5'; the `server` extra of vitrine)"
            ) from exc
        ports = {key: self.settings.milvus_port + o for key, o in SERVER_PORT_OFFSETS.items()}
        config = milvus_package.MilvusServerConfig(
            data_dir=str(self.root), proxy_port=self.settings.milvus_port, **ports
        )
        config.try_bind_port = bind_reusable  # as the server binds: a restart need not wait
        config.resolve()  # writes configs/milvus.yaml from the package's template
        milvus_package._initialize_data_files(str(self.root))  # unpacks bin/ once
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        etcd_config = self.config_file.parent / "embed-etcd.yaml"
        etcd_config.write_text(
            EMBED_ETCD_CONFIG.format(
                client=ports["etcd_port"],
                peer=self.settings.milvus_port + ETCD_PEER_PORT_OFFSET,
            )
        )
        env = child_env(
            DEPLOY_MODE="STANDALONE",
            ETCD_CONFIG_PATH=str(etcd_config),  # Milvus reads etcd.config.path from this
            METRICS_PORT=str(self.metrics_port),
            MILVUS_RUN_DIR=str(self.root / "run"),
            LD_LIBRARY_PATH=f"{self.binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        )
        return [str(self.binary), "run", "standalone"], env, self.root


def local_milvus(settings: VitrineSettings) -> MilvusLite | MilvusStandalone:
    """The local Milvus of ``settings``' kind (``VITRINE_MILVUS_KIND``)."""
    if settings.milvus_kind == "server":
        return MilvusStandalone(settings)
    return MilvusLite(settings)


#: Callers construct "the local Milvus" without caring which kind it is.
LocalMilvus = local_milvus
