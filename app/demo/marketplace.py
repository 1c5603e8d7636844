"""The demo producer: a synthetic marketplace as listing events, images served on loopback.

Listings are drawn with :mod:`encoders.synth` (category shape, colour, title), their covers
rendered as JPEGs and served by a small HTTP server on 127.0.0.1; events (creates, then a mix of
price edits, new photos and deletes) go to the listing events topic with Java-compatible key
hashing. Run the embedder with ``VITRINE_ALLOW_LOOPBACK_IMAGES=true`` to fetch them.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from encoders import synth

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs under concurrent fetches: 1 s retransmit stalls.
    request_queue_size = 512
    daemon_threads = True


class LoopbackImageServer:
    """Serves ``images[path]`` bytes on 127.0.0.1 from a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self.images: dict[str, bytes] = {}
        images = self.images

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, like a real image CDN: the fetcher's pooled connections are reused
            # instead of one TCP handshake per image.
            protocol_version = "HTTP/1.1"
            timeout = 30  # idle keep-alive connections end

            def do_GET(self) -> None:
                body = images.get(self.path)
                status = "200 OK" if body is not None else "404 Not Found"
                body = body if body is not None else b"not found"
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                # One write: split header/body writes meet delayed ACKs (40 ms each).
                self.wfile.write(head.encode() + body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _Listing:
    listing_id: str
    category: str
    group: str
    shape: str
    colour: str
    title: str
    version: int = 0
    deleted: bool = False
    photo: str = ""  # what the cover shows; another group's shape = a mismatched photo
    photo_colour: str = ""


def render_jpeg(rng: np.random.Generator, shape: str, colour: str, size: int) -> bytes:
    """A synthetic product photo as JPEG bytes."""
    buf = io.BytesIO()
    synth.render(rng, shape, colour, size).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def marketplace_events(
    server: LoopbackImageServer,
    listings: int,
    events: int,
    *,
    seed: int = 7,
    image_size: int = 128,
    delete_share: float = 0.05,
    mismatch_share: float = 0.0,
    version_base: int = 0,
) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` listing events: ``listings`` creates, then edits up to ``events``.

    ``mismatch_share`` of new photos show a product of another category group than the title
    (what the mismatch score should catch). Versions start above ``version_base``, so a later
    run with a larger base edits the same listings instead of being skipped as stale.
    """
    rng = np.random.default_rng(seed)
    cats = synth.categories()
    colours = list(synth.COLOURS)
    live: list[_Listing] = []

    def choose_photo(item: _Listing) -> None:
        # A mismatched photo shows another group's product in any colour, as in training data.
        item.photo, item.photo_colour = item.shape, item.colour
        if mismatch_share > 0 and rng.random() < mismatch_share:
            others = [shape for _, group, shape in cats if group != item.group]
            item.photo = others[int(rng.integers(len(others)))]
            item.photo_colour = colours[int(rng.integers(len(colours)))]

    def emit(item: _Listing, kind: str, price: float) -> tuple[bytes, bytes]:
        item.version = max(item.version, version_base) + 1
        payload: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{item.listing_id}-{item.version}",
            "event_type": kind,
            "listing_id": item.listing_id,
            "version": item.version,
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        if kind != "deleted":
            path = f"/img/{item.listing_id}-{item.photo}-{item.photo_colour}.jpg"
            if path not in server.images:
                server.images[path] = render_jpeg(rng, item.photo, item.photo_colour, image_size)
            payload.update(
                title=item.title,
                image_urls=[server.url(path)],
                category=item.category.replace("-", "/"),
                price={"amount": round(price, 2), "currency": "EUR"},
                seller_id=f"seller-{int(rng.integers(50))}",
                marketplace="demo",
            )
        return item.listing_id.encode(), json.dumps(payload).encode()

    for n in range(events):
        if n < listings or not live:
            category, group, shape = cats[int(rng.integers(len(cats)))]
            colour = colours[int(rng.integers(len(colours)))]
            item = _Listing(
                f"demo-{n:07d}",
                category,
                group,
                shape,
                colour,
                synth.make_title(rng, group, colour),
            )
            choose_photo(item)
            live.append(item)
            yield emit(item, "created", float(rng.uniform(5, 500)))
            continue
        item = live[int(rng.integers(len(live)))]
        roll = rng.random()
        if roll < delete_share:
            live.remove(item)
            yield emit(item, "deleted", 0.0)
        elif roll < 0.5:
            yield emit(item, "updated", float(rng.uniform(5, 500)))  # price edit only
        else:
            item.colour = colours[int(rng.integers(len(colours)))]
            item.title = synth.make_title(rng, item.group, item.colour)
            choose_photo(item)
            yield emit(item, "updated", float(rng.uniform(5, 500)))


def pace(items: Iterator[Any], rate: float) -> Iterator[Any]:
    """Yield items at about ``rate`` per second (0 = as fast as possible)."""
    started = time.monotonic()
    for n, item in enumerate(items):
        if rate > 0:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item
