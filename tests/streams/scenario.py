"""A mixed stream of listing events with a known final state and a known set of poison."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas import ContractError, DeadLetter, decode_listing_event
from tests.streams.harness import ImageServer, bomb, encode_json, listing_event, png
from vitrine.vectorstore import connect

COLOURS = [(200, 30, 30), (30, 30, 200), (30, 160, 60), (230, 200, 30), (130, 50, 170)]
TITLES = ["red car", "blue boot new", "vintage guitar", "steel watch", "toy car rare"]


@dataclass
class Scenario:
    """Records to produce, and what must come out."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    final: dict[str, int] = field(default_factory=dict)  # listing_id -> version with a row
    poison: dict[bytes, str] = field(default_factory=dict)  # record value -> expected reason


def build(
    server: ImageServer,
    total: int = 2000,
    seed: int = 11,
    cap: int = 64 * 1024,
    poison_share: float = 0.02,
) -> Scenario:
    """``total`` events: creates, updates, deletes, re-creates, duplicates, out-of-order and
    ``poison_share`` poison."""
    rng = random.Random(seed)
    for i, colour in enumerate(COLOURS):
        server.images[f"/c{i}.png"] = png(colour)
    server.images["/bomb.png"] = bomb()
    server.images["/html.png"] = b"<html><body>not an image</body></html>"
    server.images["/huge.png"] = b"\x89PNG\r\n\x1a\n" + bytes(cap + 4096)
    scenario = Scenario()
    poison_count = int(total * poison_share)
    good_count = total - poison_count
    # Per-listing histories, then interleaved with local reordering and duplicates.
    histories: list[list[dict[str, Any]]] = []
    made = 0
    n = 0
    while made < good_count:
        lid = f"L{n:05d}"
        n += 1
        length = min(rng.choice([1, 2, 3, 4, 6]), good_count - made)
        history: list[dict[str, Any]] = []
        title, image = rng.choice(TITLES), f"/c{rng.randrange(len(COLOURS))}.png"
        for version in range(1, length + 1):
            if version == 1 or (history and history[-1]["event_type"] == "deleted"):
                kind = "created"  # a first create, or a re-create after a delete
            elif rng.random() < 0.15:
                kind = "deleted"
            else:
                kind = "updated"
                if rng.random() < 0.5:  # a new title or photo; otherwise only the price
                    title, image = rng.choice(TITLES), f"/c{rng.randrange(len(COLOURS))}.png"
            history.append(
                listing_event(
                    lid,
                    version,
                    kind,
                    title=title,
                    image_url=server.url(image),
                    price=float(version),
                )
            )
        made += length
        histories.append(history)
        last = history[-1]
        if last["event_type"] != "deleted":
            scenario.final[lid] = last["version"]
    stream: list[dict[str, Any]] = []
    pending = [list(h) for h in histories]
    while pending:
        h = rng.choice(pending)
        stream.append(h.pop(0))
        if not h:
            pending.remove(h)
    # Out of order: swap some neighbouring events (same listing or not).
    for _ in range(len(stream) // 10):
        i = rng.randrange(len(stream) - 1)
        stream[i], stream[i + 1] = stream[i + 1], stream[i]
    records: list[tuple[bytes | None, bytes]] = [
        (e["listing_id"].encode(), encode_json(e)) for e in stream
    ]
    # Duplicates: replay some records later (already counted in the good budget).
    for _ in range(good_count // 50):
        i = rng.randrange(len(records))
        records[rng.randrange(len(records))] = records[i]
    kinds = [
        ("malformed_json", None),
        ("missing_field", None),
        ("not_found", "/missing.png"),
        ("undecodable", "/html.png"),
        ("decompression_bomb", "/bomb.png"),
        ("too_large", "/huge.png"),
        ("forbidden_address", None),
    ]
    listing_ids = sorted({e["listing_id"] for e in stream})
    for p in range(poison_count):
        reason, path = kinds[p % len(kinds)]
        lid = f"P{p:04d}"
        if path is not None and p % 2 == 0:
            # The newest version of a real listing is poison: its row keeps the newest valid
            # version, wherever the poison lands in the stream (docs/embedder.md).
            lid = rng.choice(listing_ids)
            event = listing_event(lid, 100 + p, "updated", image_url=server.url(path))
            value = encode_json(event)
            scenario.poison[value] = reason
            records.insert(rng.randrange(len(records) + 1), (lid.encode(), value))
            continue
        if reason == "malformed_json":
            value = b'{"event_type": "created", "listing_id": "' + lid.encode() + b'"'
        elif reason == "missing_field":
            event = listing_event(lid, 1)
            del event["title"]
            value = encode_json(event)
            try:
                decode_listing_event(value)
            except ContractError as exc:
                reason = exc.reason
        elif reason == "forbidden_address":
            value = encode_json(listing_event(lid, 1, image_url=f"http://10.20.{p % 250}.7/a.png"))
        else:
            assert path is not None
            value = encode_json(listing_event(lid, 1, image_url=server.url(path)))
        scenario.poison[value] = reason
        records.insert(rng.randrange(len(records) + 1), (lid.encode(), value))
    # Keep the final state consistent with what was actually produced (duplicates replaced
    # some records): recompute it from the records.
    newest: dict[str, dict[str, Any]] = {}

    for _key, value in records:
        if value in scenario.poison:
            continue
        event = json.loads(value)
        seen = newest.get(event["listing_id"])
        if seen is None or event["version"] > seen["version"]:
            newest[event["listing_id"]] = event
    scenario.final = {
        lid: e["version"] for lid, e in newest.items() if e["event_type"] != "deleted"
    }
    scenario.records = records
    return scenario


def milvus_rows(settings: Any) -> list[dict[str, Any]]:
    """Every row of the test collection (listing_id and version)."""
    for attempt in range(5):  # a busy shared server may refuse a new channel for a moment
        try:
            client = connect(settings)
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(2)
    rows: list[dict[str, Any]] = []
    try:
        iterator = client.query_iterator(
            settings.milvus_collection,
            batch_size=1000,
            filter="version >= 0",
            output_fields=["listing_id", "version"],
        )
        while batch := iterator.next():
            rows.extend(batch)
        iterator.close()
    finally:
        client.close()
    return rows


_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def committed(settings: Any, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per source partition (-1001 = none)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.app_id}
    )
    wanted = [TopicPartition(settings.topic_events, p) for p in range(partitions)]
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                tps = consumer.committed(wanted, timeout=10)
                return {tp.partition: tp.offset for tp in tps}
            except KafkaException as exc:
                # The group's coordinator moves or loads (a broker restarted, a busy cluster):
                # retriable, as the client library itself would treat it.
                error = exc.args[0]
                moving = error.retriable() or error.code() in _COORDINATOR_MOVING
                if not moving or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def end_offsets(settings: Any, partitions: int) -> dict[int, int]:
    """High watermarks of the source partitions."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "wm"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.topic_events, p), timeout=10)[
                1
            ]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def wait_drained(settings: Any, partitions: int, timeout_s: float) -> bool:
    """True once the group committed every source partition up to its end.

    The ends are read again each time: a record produced just after the caller stopped its
    producer still counts, and a group that committed past an earlier reading is not stuck."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        positions = committed(settings, partitions)
        if positions == end_offsets(settings, partitions):
            return True
        time.sleep(0.5)
    return False


def dead_letters(messages: list[Any]) -> Iterator[tuple[tuple[int, int], bytes, DeadLetter]]:
    """``((partition, offset), original value, headers)`` of each dead-letter record."""
    for msg in messages:
        letter = DeadLetter.from_headers(msg.headers())
        yield (letter.partition, letter.offset), msg.value(), letter
