"""The blocking runner: model calls never queue behind the pool's work."""

from __future__ import annotations

import asyncio
import threading

from streams.executor import BlockingRunner


def test_a_model_call_runs_while_every_pool_thread_is_busy() -> None:
    runner = BlockingRunner(2)
    release = threading.Event()

    async def run() -> str:
        busy = [asyncio.ensure_future(runner.run(release.wait, 30)) for _ in range(3)]
        await asyncio.sleep(0.05)  # both pool threads blocked, one more task queued
        try:
            return await asyncio.wait_for(
                runner.run_model(lambda: threading.current_thread().name), 10
            )
        finally:
            release.set()
            await asyncio.gather(*busy)

    try:
        name = asyncio.run(run())
    finally:
        runner.close()
    assert name.startswith("vitrine-embedder-model")
