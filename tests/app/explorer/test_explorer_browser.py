"""The explorer in a real browser: headless Chromium against a running explorer, recall worker,
Kafka broker and milvus-lite. Cards render with loaded photos, a click pivots, filters apply,
bad input shows its reason, the live strip shows figures."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from app.demo.marketplace import LoopbackImageServer, render_jpeg
from app.explorer.server import serving
from app.explorer.settings import ExplorerSettings
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from recall.query_embedding import QueryEmbedder
from recall.settings import RecallSettings
from schemas import EventType, ListingEvent, Price, RecallFilters, RecallQuery, encode
from tests.conftest import ensure_debian_package
from tests.recall.conftest import (
    DIM,
    Catalog,
    WorkerThread,
    create_topics,
    delete_topics,
    drop_collection,
    make_catalog,
)
from tests.stub_model import build_stub_model
from vitrine.kafka_config import producer_config
from vitrine.settings import load
from vitrine.vectorstore import CollectionLayout, ensure_collection, open_client

from .browser import Browser

pytestmark = pytest.mark.integration

K = 12
DEAD_COVER = "L00002"
SHAPES = ("square", "triangle", "star", "hexagon")
COLOURS = ("red", "blue", "green")


@dataclass
class Shop:
    settings: ExplorerSettings
    catalog: Catalog
    titles: dict[str, str]
    covers: dict[str, bytes]
    embedder: QueryEmbedder
    image_vectors: np.ndarray


def _title(catalog: Catalog, i: int) -> str:
    return f"{catalog.category[i]} item {i} by {catalog.seller[i]}"


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_debian_package("chromium", "chromium")


@pytest.fixture(scope="module")
def shop(kafka: str, milvus: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A collection whose rows carry cover vectors in the model's shared space, a recall worker
    serving that model, listing events with titles and covers for every row (images on a
    loopback server), and a /metrics endpoint shaped like the embedder's."""
    model_dir = build_stub_model(tmp_path_factory.mktemp("model") / "stub")
    encoder = Encoder.load(model_dir)
    catalog = replace(make_catalog(), model_version=encoder.manifest.model_version)
    images = LoopbackImageServer()
    rng = np.random.default_rng(3)
    covers: dict[str, bytes] = {}
    for i, lid in enumerate(catalog.ids):
        covers[lid] = render_jpeg(rng, SHAPES[i % 4], COLOURS[i % 3], 160)
        if lid != DEAD_COVER:
            images.images[f"/covers/{lid}.jpg"] = covers[lid]
    pixels = np.stack([preprocess_image(covers[lid], encoder.image_spec) for lid in catalog.ids])
    image_vectors = encoder.image_embedding(pixels)

    tag = uuid.uuid4().hex[:10]
    requests, replies, events_topic = f"t_{tag}.requests", f"t_{tag}.replies", f"t_{tag}.events"
    collection = f"t_{tag}_listings"
    create_topics(kafka, {requests: 2, replies: 1, events_topic: 2})
    client = open_client(milvus)
    ensure_collection(client, CollectionLayout(collection, DIM, "FLAT", shared_dim=8))
    rows = [
        {**row, "image_vector": image_vectors[i].tolist()} for i, row in enumerate(catalog.rows())
    ]
    client.insert(collection, rows)
    client.close()
    recall_settings = load(
        RecallSettings,
        kafka_bootstrap=kafka,
        milvus_collection=collection,
        topic_recall_requests=requests,
        topic_recall_replies=replies,
        recall_group_id=f"t_{tag}.workers",
        recall_poll_timeout_s=0.1,
        model_dir=model_dir,
        metrics_port=0,
    )
    worker = WorkerThread(recall_settings).start()

    producer = Producer(producer_config(recall_settings))
    titles = {}
    for i, lid in enumerate(catalog.ids):
        titles[lid] = _title(catalog, i)
        event = ListingEvent(
            event_id=f"e-{lid}",
            event_type=EventType.CREATED,
            listing_id=lid,
            version=1,
            occurred_at=datetime.now(UTC),
            title=titles[lid],
            image_urls=(images.url(f"/covers/{lid}.jpg"),),
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
    events.labels(outcome="dead_lettered", reason="not_an_image").inc(3)
    stop = threading.Event()

    def embed_steadily() -> None:  # 20 listings a second, each searchable 80 ms after its event
        while not stop.wait(0.05):
            freshness.labels(outcome="embedded").observe(0.08)
            events.labels(outcome="embedded", reason="").inc()

    threading.Thread(target=embed_steadily, daemon=True).start()
    metrics_server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)

    shared = ["kafka_bootstrap", "milvus_collection"]
    shared += ["topic_recall_requests", "topic_recall_replies"]
    explorer = load(
        ExplorerSettings,
        **{name: getattr(recall_settings, name) for name in shared},
        topic_events=events_topic,
        explorer_port=0,
        explorer_k=K,
        explorer_metrics_url=f"http://127.0.0.1:{metrics_server.server_port}/metrics",
        metrics_port=0,
    )
    os.environ["VITRINE_ALLOW_LOOPBACK_IMAGES"] = "true"  # the covers are on 127.0.0.1
    try:
        yield Shop(explorer, catalog, titles, covers, QueryEmbedder(model_dir), image_vectors)
    finally:
        os.environ.pop("VITRINE_ALLOW_LOOPBACK_IMAGES", None)
        stop.set()
        worker.stop()
        metrics_server.shutdown()
        metrics_server.server_close()
        images.close()
        delete_topics(kafka, [requests, replies, events_topic])
        drop_collection(milvus, collection)


DONE = "document.body.dataset.state === 'done'"
CARD_IDS = "[...document.querySelectorAll('#results .card')].map(c => c.dataset.listing)"
PHOTOS = "[...document.querySelectorAll('#results .card img')]"
PHOTOS_LOADED = f"{PHOTOS}.length > 0 && {PHOTOS}.every(i => i.complete && i.naturalWidth > 0)"
STATUS = "document.getElementById('status').textContent"
RESET = "document.body.dataset.state = ''; document.getElementById('status').textContent = ''"


def _expected(shop: Shop, seed: str, filters: RecallFilters | None = None) -> list[str]:
    vector = shop.catalog.vectors[shop.catalog.index_of(seed)]
    return [lid for lid, _ in shop.catalog.exact(vector.tolist(), K, filters, exclude=seed)]


def _expected_shared(shop: Shop, query: RecallQuery) -> list[str]:
    vector = np.asarray(shop.embedder.embed(query), np.float64)
    images = shop.image_vectors.astype(np.float64)
    scores = images @ vector / np.linalg.norm(images, axis=1)
    return [shop.catalog.ids[i] for i in np.argsort(-scores)[:K]]


async def _scenario(shop: Shop, chromium: str, upload_dir: Path) -> None:
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
                "['live-p50', 'live-rate', 'live-dlq'].map(id => document.getElementById(id)"
                ".textContent).every(text => text !== '–') && "
                "['live-p50', 'live-rate', 'live-dlq'].map(id => document.getElementById(id)"
                ".textContent)"
            )
            assert figures[0] == "75 ms" and figures[2] == "3", figures
            assert float(figures[1]) > 0, figures  # events are being embedded

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

            # A phrase: the cards of an exact search of its embedding over the cover vectors.
            await browser.goto(base)
            await browser.eval(
                "document.getElementById('text').value = 'blue star';"
                "document.querySelector('#search button').click()"
            )
            await browser.wait_for(f"location.search.includes('text=blue') && {DONE}")
            want = _expected_shared(shop, RecallQuery(text="blue star"))
            assert await browser.eval(CARD_IDS) == want
            await browser.wait_for(PHOTOS_LOADED)

            # A photo from the file picker: a listing's own cover finds that listing.
            for lid in ("L00007", "L00150"):
                cover = upload_dir / f"{lid}.jpg"
                cover.write_bytes(shop.covers[lid])
                await browser.eval(RESET)
                await browser.set_files("#photo", [cover])
                await browser.wait_for(f"{STATUS}.includes('your photo') && {DONE}")
                assert lid in (await browser.eval(CARD_IDS))[:3]
                await browser.wait_for(PHOTOS_LOADED)

            # Not a photo, or blank text: the reason is shown, nothing hangs.
            notes = upload_dir / "notes.txt"
            notes.write_text("this is not a photo")
            await browser.eval(RESET)
            await browser.set_files("#photo", [notes])
            await browser.wait_for("document.body.dataset.state === 'error'")
            assert "not_an_image" in await browser.eval(STATUS)
            await browser.goto(f"{base}?text=%20%20")
            await browser.wait_for("document.body.dataset.state === 'error'")
            assert "empty_text" in await browser.eval(STATUS)
            assert browser.console_errors == []

            shot = os.environ.get("VITRINE_EXPLORER_SCREENSHOT")
            if shot:
                await browser.goto(f"{base}?listing_id={seed}")
                await browser.wait_for(f"{DONE} && ({PHOTOS_LOADED})")
                await browser.screenshot(Path(shot))
        finally:
            await browser.close()


def test_explorer_in_a_real_browser(shop: Shop, chromium: str, tmp_path: Path) -> None:
    asyncio.run(_scenario(shop, chromium, tmp_path))


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


def test_the_blocking_client_searches_by_text_and_photo(shop: Shop) -> None:
    from recall import RecallClient
    from recall.errors import InvalidQuery
    from schemas import RecallStatus, limits

    with RecallClient(shop.settings) as client:
        reply = client.search_text("blue star", k=K, timeout=30)
        assert reply.status is RecallStatus.OK
        assert [i.listing_id for i in reply.items or ()] == _expected_shared(
            shop, RecallQuery(text="blue star")
        )
        reply = client.similar_to_image(shop.covers["L00042"], k=3, timeout=30)
        assert "L00042" in [i.listing_id for i in reply.items or ()]
        blank = client.search_text(" ", timeout=30)
        assert (blank.status, blank.reason) == (RecallStatus.INVALID, "empty_text")
        junk = client.similar_to_image(b"%PDF-1.7 not a photo", timeout=30)
        assert (junk.status, junk.reason) == (RecallStatus.INVALID, "not_an_image")
        with pytest.raises(InvalidQuery) as caught:  # refused before it is sent
            client.similar_to_image(b"\xff" * (limits.MAX_QUERY_IMAGE_BYTES + 1))
        assert caught.value.reason == "too_large"
