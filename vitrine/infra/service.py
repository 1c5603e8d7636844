"""One base for every local service `vitrine infra` runs: spawn, pid file, readiness, stop.

A service is a child process started in its own session (a Ctrl-C of the caller does not reach
it), its output in a log file, its pid in a pid file. It is found again by pid file and by a
marker in its command line (a path only this home uses), so `infra down` stops it even when the
pid file was lost, and never signals a stranger that reused the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from vitrine.errors import InfraError
from vitrine.infra.process import find_pids, port_open, read_pid, terminate
from vitrine.settings import InfraSettings, VitrineSettings


@dataclass(frozen=True)
class ServiceStatus:
    """What `vitrine infra status` reports about one service."""

    name: str
    managed: bool
    where: str
    pid: int | None
    answering: bool


class LocalService(ABC):
    """A process of this home: subclasses say how to launch it and how to ask it if it is up."""

    #: Shown in messages and `infra status`.
    name: str = "service"
    #: Seconds between two readiness probes while starting.
    probe_interval_s: float = 0.5
    #: Grace period between SIGTERM and SIGKILL on stop.
    stop_timeout_s: float = 30.0

    def __init__(self, settings: VitrineSettings, root: Path, marker: Path) -> None:
        self.settings = settings
        self.root = root
        self.marker = str(marker)
        self.pid_file = root / f"{self.name}.pid"
        self.stdout_file = root / f"{self.name}.out"
        # The handle of a process this object started: kept so that it is waited for (no
        # zombie, no "still running" warning) when this object stops it.
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide ---------------------------------------------------------------

    @property
    @abstractmethod
    def managed(self) -> bool:
        """True when Vitrine runs this service (no external endpoint configured)."""

    @property
    @abstractmethod
    def where(self) -> str:
        """The address clients connect to."""

    @abstractmethod
    def ports(self) -> list[int]:
        """Loopback ports the service listens on; all must be free before a start."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str], Path]:
        """Prepare config and data, then return (argv, environment, working directory)."""

    @abstractmethod
    def probe(self, timeout_s: float) -> bool:
        """True when the service answers a real request (not only an open port)."""

    def port_hint(self) -> str:
        """What to do when a port is taken (the variables that move it)."""
        return "set other ports in the VITRINE_* settings"

    def log_files(self) -> list[Path]:
        """Files whose tail explains a failed start."""
        return [self.stdout_file]

    # -- lifecycle -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process of this service and home, from the pid file and the process table."""
        found = set(find_pids(self.marker))
        pid = read_pid(self.pid_file, self.marker)
        if pid is not None:
            found.add(pid)
        return sorted(found)

    def answering(self, timeout_s: float = 3.0) -> bool:
        """True when the service answers; a managed one is first checked for an open port."""
        if self.managed and not all(port_open("127.0.0.1", p) for p in self.ports()[:1]):
            return False
        try:
            return self.probe(timeout_s)
        except Exception:
            return False

    def start(self) -> bool:
        """Start the service unless it already runs; return True when this call started it."""
        if self.pids():
            self.wait_ready()
            return False
        for port in self.ports():
            if port_open("127.0.0.1", port):
                raise InfraError(
                    f"{self.name}: port {port} is in use by another process; {self.port_hint()}"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        argv, env, cwd = self.command()
        with self.stdout_file.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=str(cwd),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self._proc = proc
        try:
            self.wait_ready(proc)
        except InfraError:
            self.stop()
            raise
        return True

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the service answers, or raise with the tail of its logs."""
        timeout = start_timeout(self.settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise InfraError(f"{self.name} exited with {proc.returncode}:\n{self.log_tail()}")
            if self.answering(timeout_s=2.0):
                return
            time.sleep(self.probe_interval_s)
        raise InfraError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> bool:
        """Stop every process of this service; return True when one was running."""
        pids = self.pids()
        if pids:
            terminate(pids, timeout_s=self.stop_timeout_s)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        return bool(pids)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def kill(self) -> bool:
        """SIGKILL the service at once (fault-injection tests); True when one was running."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap()
        return bool(pids)

    def status(self) -> ServiceStatus:
        """Managed or external, pid, and whether it answers."""
        pids = self.pids() if self.managed else []
        return ServiceStatus(
            name=self.name,
            managed=self.managed,
            where=self.where,
            pid=pids[0] if pids else None,
            answering=self.answering(),
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of each log file."""
        text = ""
        for path in self.log_files():
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"--- {path}\n" + "\n".join(tail) + "\n"
        return text


def start_timeout(settings: VitrineSettings) -> float:
    """How long a start waits for a service to answer."""
    if isinstance(settings, InfraSettings):
        return settings.infra_start_timeout_s
    return 90.0


def child_env(**extra: str) -> dict[str, str]:
    """The caller's environment plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env
