"""Process bookkeeping for the local services: pid files, liveness, clean stops, port probes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in ``pid_file`` if it is alive and its command line has ``marker``.

    A pid file can outlive its process (a reboot, a kill -9) and the pid be reused by anything;
    checking the command line keeps `infra down` from signalling a stranger.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not is_alive(pid):
        return None
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None
    return pid if marker in cmdline else None


def is_alive(pid: int) -> bool:
    """True when ``pid`` names a running process that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def find_pids(marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (e.g. a config file path).

    Finds services whose pid file was lost, so ``infra down`` leaves nothing behind.
    """
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def terminate(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``timeout_s``, SIGKILL survivors; return what was killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        _reap(pids)
        time.sleep(0.1)
    killed = [p for p in pids if is_alive(p)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(p) for p in killed):
        _reap(killed)
        time.sleep(0.05)
    return killed


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
