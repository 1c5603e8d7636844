"""A milvus-lite server on loopback, shared by the embedder and the recall worker.

milvus-lite opened from a file locks it to one process, so Vitrine runs the milvus-lite binary
as a gRPC server on 127.0.0.1 and every process connects with ``MilvusClient(uri=...)`` — the
same code that talks to Milvus standalone or distributed in production. The Python launcher
that ships with milvus-lite leaves its binary running when the launcher exits, so Vitrine starts
the binary itself and keeps its pid.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from dataclasses import dataclass

from vitrine.errors import InfraError
from vitrine.infra.process import find_pids, port_open, read_pid, terminate
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)

DB_NAME = "vitrine.db"  # milvus-lite allows [A-Za-z0-9._-], at most 36 characters


@dataclass(frozen=True)
class MilvusStatus:
    """What `vitrine infra status` reports about the vector store."""

    managed: bool
    uri: str
    pid: int | None
    answering: bool


class LocalMilvus:
    """Starts and stops the milvus-lite server described by ``settings``."""

    def __init__(self, settings: VitrineSettings) -> None:
        self.settings = settings
        self.root = settings.home / "milvus"
        self.db_file = self.root / DB_NAME
        self.pid_file = self.root / "milvus.pid"
        self.log_file = self.root / "milvus.log"

    def pids(self) -> list[int]:
        """Every milvus-lite server process serving this home's data file."""
        found = set(find_pids(str(self.db_file)))
        pid = read_pid(self.pid_file, str(self.db_file))
        if pid is not None:
            found.add(pid)
        return sorted(found)

    def answering(self, timeout_s: float = 3.0) -> bool:
        """True when the endpoint answers a list-collections call."""
        from vitrine.vectorstore import open_client

        if self.settings.manages_milvus and not port_open("127.0.0.1", self.settings.milvus_port):
            return False
        try:
            client = open_client(
                self.settings.milvus_endpoint, self.settings.milvus_token, timeout_s
            )
        except Exception:
            return False
        try:
            client.list_collections(timeout=timeout_s)
        except Exception:
            return False
        finally:
            client.close()
        return True

    def start(self) -> bool:
        """Start the server unless it already runs; return True when this call started it."""
        if self.pids():
            self.wait_ready()
            return False
        port = self.settings.milvus_port
        if port_open("127.0.0.1", port):
            raise InfraError(
                f"port {port} is in use by another process; set VITRINE_MILVUS_PORT, or point "
                "VITRINE_MILVUS_URI at that server if it is Milvus"
            )
        with warnings.catch_warnings():
            # milvus-lite 2.5.1 imports the deprecated pkg_resources; nothing we can change.
            warnings.simplefilter("ignore", UserWarning)
            from milvus_lite.server import Server

        self.root.mkdir(parents=True, exist_ok=True)
        server = Server(str(self.db_file), address=f"127.0.0.1:{port}")
        if not server.init():
            raise InfraError("the milvus-lite package has no server binary on this platform")
        bin_dir = os.path.dirname(server.milvus_bin)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = bin_dir + ":" + env.get("LD_LIBRARY_PATH", "")
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [str(a) for a in server.args],
                env=env,
                cwd=str(self.root),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self.wait_ready(proc)
        return True

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the server answers, or raise with the tail of its log."""
        timeout = float(getattr(self.settings, "infra_start_timeout_s", 90.0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise InfraError(f"milvus-lite exited with {proc.returncode}:\n{self._log_tail()}")
            if self.answering(timeout_s=2.0):
                return
            time.sleep(0.3)
        raise InfraError(f"milvus-lite did not answer in {timeout:.0f} s:\n{self._log_tail()}")

    def stop(self) -> bool:
        """Stop the server; return True when one was running."""
        pids = self.pids()
        if pids:
            terminate(pids, timeout_s=20.0)
        self.pid_file.unlink(missing_ok=True)
        return bool(pids)

    def status(self) -> MilvusStatus:
        """Managed or external, pid, and whether it answers."""
        pids = self.pids() if self.settings.manages_milvus else []
        return MilvusStatus(
            managed=self.settings.manages_milvus,
            uri=self.settings.milvus_endpoint,
            pid=pids[0] if pids else None,
            answering=self.answering(),
        )

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_file.is_file():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
