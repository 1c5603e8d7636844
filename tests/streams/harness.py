"""Helpers of the embedder tests: a loopback image server, event builders, topic readers."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import Consumer, Producer
from PIL import Image

from vitrine.kafka_config import producer_config
from vitrine.settings import VitrineSettings


def png(colour: tuple[int, int, int], size: int = 40) -> bytes:
    """A small solid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def bomb() -> bytes:
    """A tiny PNG that claims a huge pixel count (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("1", (12000, 12000), 0).save(buf, "PNG", optimize=True)
    return buf.getvalue()


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs under concurrent fetches: 1 s retransmit stalls.
    request_queue_size = 512
    daemon_threads = True


class ImageServer:
    """Threaded HTTP server on 127.0.0.1; ``images[path] = bytes`` or ``(status, bytes)``."""

    def __init__(self) -> None:
        self.images: dict[str, Any] = {}
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                entry = server.images.get(self.path.split("?", 1)[0])
                status, body = 404, b"not here"
                extra: dict[str, str] = {}
                if isinstance(entry, bytes):
                    status, body = 200, entry
                elif isinstance(entry, tuple):
                    status, body = entry[0], entry[1]
                    extra = entry[2] if len(entry) > 2 else {}
                head = [f"HTTP/1.1 {status} X", "Content-Type: image/png"]
                head += [f"{k}: {v}" for k, v in extra.items()]
                head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
                # One write: split header/body writes meet delayed ACKs (40 ms each).
                self.wfile.write("\r\n".join(head).encode() + body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def listing_event(
    listing_id: str,
    version: int,
    kind: str = "created",
    *,
    title: str = "red car",
    image_url: str = "http://127.0.0.1/none.png",
    price: float = 10.0,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A valid listing event payload."""
    when = occurred_at or T0 + timedelta(seconds=version)
    payload: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"{listing_id}-{version}-{kind}",
        "event_type": kind,
        "listing_id": listing_id,
        "version": version,
        "occurred_at": when.isoformat().replace("+00:00", "Z"),
    }
    if kind != "deleted":
        payload.update(
            title=title,
            image_urls=[image_url],
            category="vehicles/car",
            price={"amount": price, "currency": "EUR"},
            seller_id="s1",
            marketplace="m1",
        )
    return payload


def produce(
    settings: VitrineSettings, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> None:
    """Produce keyed records with the murmur2 partitioner and wait for delivery."""
    producer = Producer(producer_config(settings))
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:3]


def encode_json(payload: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(payload, separators=(",", ":")).encode()


def read_all(
    settings: VitrineSettings, topic: str, expect: int | None = None, timeout_s: float = 30.0
) -> list[Any]:
    """Every record of ``topic`` (waiting until ``expect`` arrived, or idle for 2 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if expect is None and records and time.monotonic() - idle_since > 2:
                    break
                if expect is not None and len(records) >= expect:
                    break
                continue
            if msg.error():
                continue
            records.append(msg)
            idle_since = time.monotonic()
            if expect is not None and len(records) >= expect and consumer.poll(0.5) is None:
                break
    finally:
        consumer.close()
    return records
