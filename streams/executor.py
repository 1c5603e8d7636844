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
    """Named thread pools; ``await runner.run(fn, *args)`` runs ``fn`` off the loop.

    The towers get a thread of their own (:meth:`run_model`): in one shared FIFO pool a batch's
    encode call queued behind the next batch's image decodes and the Milvus calls, so decode
    and encode took turns instead of overlapping.
    """

    def __init__(self, threads: int, name: str = "vitrine-embedder") -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-model")

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result."""
        return await self._submit(self._pool, fn, *args, **kwargs)

    async def run_model(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a model call (``Encoder.encode``) on the model thread and await its result."""
        return await self._submit(self._model, fn, *args, **kwargs)

    @staticmethod
    async def _submit(
        pool: ThreadPoolExecutor, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(pool, call)

    def close(self) -> None:
        """Wait for running calls, then stop the threads."""
        self._model.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
