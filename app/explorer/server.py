"""Starting and stopping the explorer's parts in order: catalogue, recall client, web server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from recall.client import AsyncRecallClient
from streams.fetch import ImageFetcher
from streams.settings import EmbedderSettings
from vitrine.settings import load

from .catalog import CatalogView
from .settings import ExplorerSettings
from .web import LiveStrip, Thumbnails, build_app

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def serving(settings: ExplorerSettings) -> AsyncIterator[str]:
    """Run the explorer inside the block; yields the page's base URL."""
    fetch_policy = load(EmbedderSettings)
    async with contextlib.AsyncExitStack() as stack:
        # Each part is closed (in reverse order) as soon as it exists, also when a later one
        # fails to start.
        catalog = CatalogView(settings, settings.topic_events)
        stack.push_async_callback(asyncio.to_thread, catalog.close)
        await asyncio.to_thread(catalog.start)
        recall = await asyncio.to_thread(AsyncRecallClient, settings)
        stack.push_async_callback(recall.aclose)
        fetcher = ImageFetcher(fetch_policy)
        stack.push_async_callback(fetcher.close)
        session = aiohttp.ClientSession(trust_env=False)
        stack.push_async_callback(session.close)
        thumbnails = Thumbnails(
            fetcher,
            settings.explorer_thumbnail_px,
            settings.explorer_thumbnail_cache,
            fetch_policy.image_max_pixels,
        )
        app = build_app(
            settings, recall, catalog, thumbnails, LiveStrip(session, settings.explorer_metrics_url)
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.explorer_host, settings.explorer_port)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://{settings.explorer_host}:{port}/"


async def run(settings: ExplorerSettings) -> int:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings) as url:
        print(f"explorer: {url}", flush=True)
        await stop.wait()
    return 0
