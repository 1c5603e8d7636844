"""Processes the demo starts and stops: the embedder, the recall worker, the model build."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vitrine.errors import VitrineError


class DemoError(VitrineError):
    """The demo could not prepare or start one of its parts."""

    reason = "demo_failed"


class ServiceProcess:
    """A `vitrine` subcommand run as a child process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops children itself
            )

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def check(self) -> None:
        """Raise with the log tail when the child has died."""
        if not self.alive():
            raise DemoError(
                f"{self.name} exited with {self.proc.returncode}; last lines of "
                f"{self.log_file}:\n{tail(self.log_file)}"
            )

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; return the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def ensure_model(model_dir: Path, work_dir: Path, *, listings: int, epochs: int, seed: int) -> bool:
    """Build the `cpu` model into ``model_dir`` unless a manifest is already there.

    Synthetic marketplace -> train (real MiniLM text weights, image trunk and fusion learned)
    -> export with parity checks. Returns True when it built one. Progress bars show through.
    """
    if (model_dir / "manifest.json").is_file():
        return False
    data = work_dir / "data"
    run = work_dir / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    steps = [
        ["synth", "--out", str(data), "--listings", str(listings), "--seed", str(seed)],
        [
            "model",
            "build",
            "--data",
            str(data),
            "--profile",
            "cpu",
            "--epochs",
            str(epochs),
            "--seed",
            str(seed),
            "--out",
            str(model_dir),
            "--run-dir",
            str(run),
        ],
    ]
    print(f"Building the cpu model into {model_dir} (first run only; a few minutes)...")
    started = time.monotonic()
    for step in steps:
        result = subprocess.run([sys.executable, "-m", "app.cli", *step], env=env, check=False)
        if result.returncode != 0:
            raise DemoError(f"`vitrine {' '.join(step)}` failed with exit code {result.returncode}")
    print(f"Model built in {time.monotonic() - started:.0f} s.")
    return True
