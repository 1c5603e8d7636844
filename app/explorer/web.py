"""The explorer's HTTP side: one page, a JSON API over the recall client, guarded thumbnails.

Built on aiohttp's server: the project already depends on aiohttp for the embedder's image
fetcher, it is maintained by the aio-libs group, and a page with a handful of JSON routes needs
no more than its router. The browser never fetches a seller's URL: thumbnails come through the
embedder's SSRF-guarded fetcher and are re-encoded here.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import ValidationError

from recall.client import AsyncRecallClient
from recall.errors import InvalidQuery, RecallError, RecallTimeout
from schemas import RecallFilters, RecallReply
from streams.errors import FetchError
from streams.fetch import ImageFetcher

from .catalog import CatalogEntry, CatalogView
from .live import Scrape, figures, parse_scrape
from .settings import ExplorerSettings

log = logging.getLogger(__name__)

PAGE = resources.files("app.explorer").joinpath("static/index.html")
#: Largest upload the page accepts; photos are shrunk to QUERY_PHOTO_PX before they are sent.
UPLOAD_LIMIT = 20 * 1024 * 1024
QUERY_PHOTO_PX = 448
#: Formats the page decodes (uploads and covers), as the embedder accepts.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


class BadQuery(ValueError):
    """A query string the API refuses, with a machine-readable reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v for v in params.get(name, ()) if v.strip()]
    if len(values) > 1:
        raise BadQuery(f"{name} given more than once", "invalid_filter")
    return values[0].strip() if values else None


def _number(params: Mapping[str, Sequence[str]], name: str) -> float | None:
    text = _one(params, name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise BadQuery(f"{name} must be a number, got {text!r}", "invalid_filter") from None


def parse_filters(params: Mapping[str, Sequence[str]]) -> RecallFilters | None:
    """Filters from query parameters ``category`` (repeatable), ``price_min``, ``price_max``,
    ``currency`` and ``max_mismatch``; None when nothing is filtered."""
    raw: dict[str, Any] = {}
    categories = [c for c in params.get("category", ()) if c.strip()]
    if categories:
        raw["categories"] = categories
    low, high = _number(params, "price_min"), _number(params, "price_max")
    if low is not None or high is not None:
        currency = _one(params, "currency")
        if currency is None:
            raise BadQuery("a price range needs a currency", "invalid_filter")
        raw["price_range"] = {"min": low, "max": high, "currency": currency.upper()}
    mismatch = _number(params, "max_mismatch")
    if mismatch is not None:
        raw["max_mismatch"] = mismatch
    if not raw:
        return None
    try:
        return RecallFilters.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadQuery(f"{where}: {first['msg']}", "invalid_filter") from None


def query_photo(data: bytes, size: int = QUERY_PHOTO_PX) -> bytes:
    """An uploaded photo as a JPEG of at most ``size`` px a side, small enough for a recall
    request; ``ValueError`` when the bytes are not an image."""
    if not data:
        raise ValueError("the upload is empty")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as source:
            if source.width * source.height > 50_000_000:
                raise ValueError("the photo has too many pixels")
            source.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(source).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"the upload is not a JPEG, PNG, WebP or GIF image ({exc.__class__.__name__})"
        ) from exc
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def card(
    listing_id: str,
    entry: CatalogEntry | None,
    *,
    score: float | None = None,
    mismatch: float | None = None,
    category: str | None = None,
    price: Any = None,
) -> dict[str, Any]:
    """What the page draws for one listing."""
    price = price or (entry.price if entry else None)
    return {
        "listing_id": listing_id,
        "title": entry.title if entry else None,
        "category": category or (entry.category if entry else None),
        "price": price.model_dump() if price is not None else None,
        "score": score,
        "mismatch_score": mismatch,
        "thumb": f"/thumb/{listing_id}" if entry and entry.cover_url else None,
    }


def reply_body(reply: RecallReply, catalog: CatalogView, seed: str | None) -> dict[str, Any]:
    """The JSON answer to a query: the reply's status and its items as cards."""
    items = [
        card(
            item.listing_id,
            catalog.get(item.listing_id),
            score=item.score,
            mismatch=item.mismatch_score,
            category=item.category,
            price=item.price,
        )
        for item in reply.items or ()
    ]
    return {
        "status": str(reply.status),
        "reason": reply.reason,
        "message": reply.message,
        "model_version": reply.model_version,
        "took_seconds": reply.took_seconds,
        "seed": card(seed, catalog.get(seed)) if seed else None,
        "items": items,
    }


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {"status": "invalid", "reason": reason, "message": message}, status=status
    )


class Thumbnails:
    """Cover thumbnails fetched through the guarded fetcher, re-encoded, kept in an LRU."""

    def __init__(self, fetcher: ImageFetcher, size: int, capacity: int, max_pixels: int) -> None:
        self._fetcher = fetcher
        self._size = size
        self._capacity = capacity
        self._max_pixels = max_pixels
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    async def get(self, entry: CatalogEntry) -> bytes:
        """JPEG bytes of the listing's cover, at most ``size`` px on its longest side."""
        key = (entry.listing_id, entry.version)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        assert entry.cover_url is not None
        fetched = await self._fetcher.fetch(entry.cover_url)
        data = await asyncio.to_thread(self._shrink, fetched.data)
        if self._capacity:
            self._cache[key] = data
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return data

    def _shrink(self, data: bytes) -> bytes:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as source:
            if source.width * source.height > self._max_pixels:
                raise ValueError("image has too many pixels")
            source.draft("RGB", (self._size, self._size))
            image = source.convert("RGB")
        image.thumbnail((self._size, self._size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()


class LiveStrip:
    """Scrapes the embedder's /metrics at most once a second; figures over the last window."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self._previous: Scrape | None = None
        self._current: Scrape | None = None
        self._lock = asyncio.Lock()  # one scrape at a time: the window needs them in order

    async def figures(self) -> dict[str, Any]:
        """The strip's figures as JSON (nulls when the metrics cannot be read)."""
        async with self._lock:
            return await self._figures()

    async def _figures(self) -> dict[str, Any]:
        now = time.monotonic()
        error = None
        if self._url and (self._current is None or now - self._current.at >= 1.0):
            try:
                timeout = aiohttp.ClientTimeout(total=2)
                async with self._session.get(self._url, timeout=timeout) as response:
                    response.raise_for_status()
                    text = await response.text()
                self._previous, self._current = self._current, parse_scrape(text, now)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                error = f"metrics unavailable: {exc.__class__.__name__}"
        live = figures(self._previous, self._current)
        return {
            "freshness_p50_seconds": live.freshness_p50_s,
            "freshness_p99_seconds": live.freshness_p99_s,
            "events_per_second": live.events_per_s,
            "dead_letters": live.dead_letters,
            "error": error if self._url else "no metrics URL configured",
        }


def build_app(
    settings: ExplorerSettings,
    recall: AsyncRecallClient,
    catalog: CatalogView,
    thumbnails: Thumbnails,
    live: LiveStrip,
) -> web.Application:
    """The aiohttp application: ``/``, ``/api/similar``, ``/api/live``, ``/thumb/{id}``."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def similar(request: web.Request) -> web.Response:
        params = {k: request.query.getall(k) for k in request.query}
        try:
            listing_id = _one(params, "listing_id")
            if not listing_id:
                return _error(400, "missing_field", "listing_id is required")
            filters = parse_filters(params)
            k = int(_one(params, "k") or settings.explorer_k)
        except BadQuery as exc:
            return _error(400, exc.reason, str(exc))
        except ValueError:
            return _error(400, "invalid_value", "k must be an integer")
        return await _ask(recall.similar(listing_id, k=k, filters=filters), seed=listing_id)

    async def search_text(request: web.Request) -> web.Response:
        params = {k: request.query.getall(k) for k in request.query}
        text = request.query.get("text", "")
        try:
            filters = parse_filters(params)
        except BadQuery as exc:
            return _error(400, exc.reason, str(exc))
        return await _ask(recall.search_text(text, k=settings.explorer_k, filters=filters))

    async def search_photo(request: web.Request) -> web.Response:
        params = {k: request.query.getall(k) for k in request.query}
        try:
            filters = parse_filters(params)
        except BadQuery as exc:
            return _error(400, exc.reason, str(exc))
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"uploads are limited to {UPLOAD_LIMIT} bytes")
        upload = form.get("photo")
        if not isinstance(upload, web.FileField):
            return _error(400, "missing_field", "send the photo as the form field 'photo'")
        try:
            photo = await asyncio.to_thread(query_photo, upload.file.read())
        except ValueError as exc:
            return _error(400, "not_an_image", str(exc))
        return await _ask(recall.similar_to_image(photo, k=settings.explorer_k, filters=filters))

    async def _ask(call: Awaitable[RecallReply], seed: str | None = None) -> web.Response:
        """The recall round trip's reply as cards, or the client's refusal with its reason."""
        try:
            reply = await call
        except InvalidQuery as exc:
            return _error(400, exc.reason, str(exc))
        except RecallTimeout as exc:
            return _error(504, exc.reason, str(exc))
        except RecallError as exc:
            return _error(503, exc.reason, str(exc))
        return web.json_response(reply_body(reply, catalog, seed))

    async def thumb(request: web.Request) -> web.Response:
        entry = catalog.get(request.match_info["listing_id"])
        if entry is None or entry.cover_url is None:
            return _error(404, "not_found", "no cover known for this listing")
        try:
            data = await thumbnails.get(entry)
        except FetchError as exc:
            # The reason only: the message names the seller's host and the addresses it
            # resolved to, which a page visitor has no business learning.
            return _error(502, exc.reason, "the cover could not be fetched")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return _error(502, "not_an_image", "the cover is not a usable image")
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=300"}
        )

    async def live_figures(_: web.Request) -> web.Response:
        body = await live.figures()
        body["catalog_listings"] = len(catalog)
        return web.json_response(body)

    app = web.Application(client_max_size=UPLOAD_LIMIT)
    app.router.add_get("/", page)
    app.router.add_get("/api/similar", similar)
    app.router.add_get("/api/search", search_text)
    app.router.add_post("/api/photo", search_photo)
    app.router.add_get("/api/live", live_figures)
    app.router.add_get("/thumb/{listing_id}", thumb)
    return app
