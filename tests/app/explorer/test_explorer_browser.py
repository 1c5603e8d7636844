"""The explorer in a real browser: headless Chromium against a running explorer, recall worker,
Kafka broker and milvus-lite. Cards render with loaded photos, a click pivots, filters apply,
bad input shows its reason, the live strip shows figures."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from app.demo.marketplace import LoopbackImageServer, render_jpeg
from app.explorer.server import serving
from app.explorer.settings import ExplorerSettings
from schemas import EventType, ListingEvent, Price, RecallFilters, encode
from tests.conftest import ensure_debian_package
from tests.recall.conftest import Catalog, RecallEnv, WorkerThread, create_topics, delete_topics
from vitrine.kafka_config import producer_config
from vitrine.settings import load

from .browser import Browser

pytestmark = pytest.mark.integration

K = 12
DEAD_COVER = "L00002"
SHAPES = ("square", "triangle", "star", "hexagon")


@dataclass
class Shop:
    settings: ExplorerSettings
    catalog: Catalog
    titles: dict[str, str]


def _title(catalog: Catalog, i: int) -> str:
    return f"{catalog.category[i]} item {i} by {catalog.seller[i]}"


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_debian_package("chromium", "chromium")


@pytest.fixture(scope="module")
def shop(recall_env: RecallEnv, worker: WorkerThread) -> Iterator[Shop]:
    """Listing events with titles and covers for every row, images on a loopback server, and
    a /metrics endpoint shaped like the embedder's."""
    catalog = recall_env.catalog
    settings = recall_env.settings
    events_topic = f"t_{uuid.uuid4().hex[:10]}.events"
    create_topics(settings.bootstrap_servers, {events_topic: 2})
    images = LoopbackImageServer()
    rng = np.random.default_rng(3)
    producer = Producer(producer_config(settings))
    titles = {}
    for i, lid in enumerate(catalog.ids):
        path = f"/covers/{lid}.jpg"
        if lid != DEAD_COVER:
            images.images[path] = render_jpeg(rng, SHAPES[i % 4], "red", 160)
        titles[lid] = _title(catalog, i)
        event = ListingEvent(
            event_id=f"e-{lid}",
            event_type=EventType.CREATED,
            listing_id=lid,
            version=1,
            occurred_at=datetime.now(UTC),
            title=titles[lid],
            image_urls=(images.url(path),),
            category=catalog.category[i],
            price=Price(amount=catalog.price[i], currency=catalog.currency[i]),
            seller_id=catalog.seller[i],
            marketplace="de",
        )
        producer.produce(events_topic, key=lid.encode(), value=encode(event))
    assert producer.flush(30) == 0

    registry = CollectorRegistry()
    freshness = Histogram(
        "vitrine_embedder_freshness_seconds", "f", ["outcome"], registry=registry,
        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2),
    )  # fmt: skip
    events = Counter("vitrine_embedder_events_total", "e", ["outcome", "reason"], registry=registry)
    for _ in range(40):
        freshness.labels(outcome="embedded").observe(0.08)
    events.labels(outcome="embedded", reason="").inc(40)
    events.labels(outcome="dead_lettered", reason="not_an_image").inc(3)
    metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)

    shared = ["kafka_bootstrap", "milvus_collection"]
    shared += ["topic_recall_requests", "topic_recall_replies"]
    explorer = load(
        ExplorerSettings,
        **{name: getattr(settings, name) for name in shared},
        topic_events=events_topic,
        explorer_port=0,
        explorer_k=K,
        explorer_metrics_url=f"http://127.0.0.1:{metrics_server.server_port}/metrics",
        metrics_port=0,
    )
    os.environ["VITRINE_ALLOW_LOOPBACK_IMAGES"] = "true"  # the covers are on 127.0.0.1
    try:
        yield Shop(explorer, catalog, titles)
    finally:
        os.environ.pop("VITRINE_ALLOW_LOOPBACK_IMAGES", None)
        metrics_server.shutdown()
        metrics_server.server_close()
        images.close()
        delete_topics(settings.bootstrap_servers, [events_topic])


DONE = "document.body.dataset.state === 'done'"
CARD_IDS = "[...document.querySelectorAll('#results .card')].map(c => c.dataset.listing)"
PHOTOS = "[...document.querySelectorAll('#results .card img')]"
PHOTOS_LOADED = f"{PHOTOS}.length > 0 && {PHOTOS}.every(i => i.complete && i.naturalWidth > 0)"
STATUS = "document.getElementById('status').textContent"


def _expected(shop: Shop, seed: str, filters: RecallFilters | None = None) -> list[str]:
    vector = shop.catalog.vectors[shop.catalog.index_of(seed)]
    return [lid for lid, _ in shop.catalog.exact(vector.tolist(), K, filters, exclude=seed)]


async def _scenario(shop: Shop, chromium: str) -> None:
    async with serving(shop.settings) as base:
        browser = await Browser(chromium).start()
        try:
            await browser.goto(base)
            # The page's catalogue view has read every listing event.
            await browser.wait_for(
                "fetch('/api/live').then(r => r.json()).then(b => b.catalog_listings === "
                f"{len(shop.catalog.ids)})",
                timeout=60,
            )
            figures = await browser.wait_for(
                "document.getElementById('live-p50').textContent !== '–' && "
                "document.getElementById('live-dlq').textContent"
            )
            assert figures == "3"

            # A listing id: cards with titles and photos, in the order of an exact search.
            seed = "L00001"
            await browser.goto(f"{base}?listing_id={seed}")
            await browser.wait_for(DONE)
            ids = await browser.eval(CARD_IDS)
            assert ids == _expected(shop, seed)
            await browser.wait_for(PHOTOS_LOADED)
            titles = await browser.eval(
                "[...document.querySelectorAll('#results .card .title')].map(t => t.textContent)"
            )
            assert titles == [shop.titles[lid] for lid in ids]
            sources = await browser.eval("[...document.images].map(i => i.getAttribute('src'))")
            assert sources and all(src.startswith("/thumb/") for src in sources), sources

            # Click a card: its neighbours replace the results, and the URL says so.
            pivot = ids[2]
            await browser.eval(f"document.querySelector('[data-listing=\"{pivot}\"]').click()")
            await browser.wait_for(
                f"new URLSearchParams(location.search).get('listing_id') === '{pivot}' && {DONE}"
            )
            assert await browser.eval(CARD_IDS) == _expected(shop, pivot)
            await browser.wait_for(PHOTOS_LOADED)

            # Filters from the form.
            await browser.eval(
                "document.getElementById('category').value = 'shoes';"
                "document.getElementById('max_mismatch').value = '0.5';"
                "document.querySelector('#query button').click()"
            )
            await browser.wait_for(f"location.search.includes('category=shoes') && {DONE}")
            filters = RecallFilters(categories=("shoes",), max_mismatch=0.5)
            assert await browser.eval(CARD_IDS) == _expected(shop, pivot, filters)

            # A cover that cannot be fetched: the thumbnail route says why, the page copes.
            status = await browser.eval(
                f"fetch('/thumb/{DEAD_COVER}').then(async r => [r.status, (await r.json()).reason])"
            )
            assert status == [502, "not_found"]

            # Bad input: the reason is on the page, not a hang.
            await browser.goto(f"{base}?listing_id=NOPE")
            await browser.wait_for("document.body.dataset.state === 'error'")
            assert "not_found" in await browser.eval(
                "document.getElementById('status').textContent"
            )
            await browser.goto(f"{base}?listing_id={seed}&max_mismatch=lots")
            await browser.wait_for("document.body.dataset.state === 'error'")
            assert "invalid_filter" in await browser.eval(STATUS)
            assert await browser.eval(CARD_IDS) == []
            assert browser.console_errors == []

            shot = os.environ.get("VITRINE_EXPLORER_SCREENSHOT")
            if shot:
                await browser.goto(f"{base}?listing_id={seed}")
                await browser.wait_for(f"{DONE} && ({PHOTOS_LOADED})")
                await browser.screenshot(Path(shot))
        finally:
            await browser.close()


def test_explorer_in_a_real_browser(shop: Shop, chromium: str) -> None:
    asyncio.run(_scenario(shop, chromium))


def test_listing_parameter_is_required(shop: Shop) -> None:
    import aiohttp

    async def ask() -> tuple[int, dict[str, str]]:
        async with (
            serving(shop.settings) as base,
            aiohttp.ClientSession() as session,
            session.get(base + "api/similar") as response,
        ):
            return response.status, json.loads(await response.text())

    status, body = asyncio.run(ask())
    assert status == 400 and body["reason"] == "missing_field"
