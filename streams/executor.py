"""The one way blocking work (ONNX Runtime, Pillow, pymilvus) leaves the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class BlockingRunner:
    """A named thread pool; ``await runner.run(fn, *args)`` runs ``fn`` off the loop."""

    def __init__(self, threads: int, name: str = "vitrine-embedder") -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._pool, call)

    def close(self) -> None:
        """Wait for running calls, then stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
