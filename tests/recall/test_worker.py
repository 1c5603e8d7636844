"""The worker and the client against the real broker and milvus-lite server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recall import AsyncRecallClient, RecallBackpressure, RecallClient, RecallTimeout
from recall.filters import filter_expression
from recall.index import MilvusIndex
from schemas import (
    CORRELATION_ID_HEADER,
    REPLY_PARTITION_HEADER,
    REPLY_TOPIC_HEADER,
    PriceRange,
    RecallFilters,
    RecallStatus,
    decode_recall_reply,
    encode_reply_partition,
)

from .conftest import (
    DIM,
    RecallEnv,
    WorkerThread,
    assert_same_ranking,
    create_topics,
    delete_topics,
    worker_env,
)

pytestmark = pytest.mark.integration

FILTERS = [
    None,
    RecallFilters(categories=("shoes",)),
    RecallFilters(categories=("toys/lego", "home:kitchen")),
    RecallFilters(price_range=PriceRange(min=50, max=200, currency="EUR")),
    RecallFilters(price_range=PriceRange(max=100, currency="USD")),
    RecallFilters(exclude_sellers=("S0", "S1", "S2", "S3")),
    RecallFilters(exclude_listings=tuple(f"L{i:05d}" for i in range(0, 400, 3))),
    RecallFilters(max_mismatch=0.25),
    RecallFilters(
        categories=("shoes", "bags", "watches"),
        price_range=PriceRange(min=10, max=400, currency="EUR"),
        exclude_sellers=("S5",),
        exclude_listings=("L00002", "L00007"),
        max_mismatch=0.75,
    ),
]


@pytest.fixture(scope="module")
def client(recall_env: RecallEnv, worker: WorkerThread):
    with RecallClient(recall_env.settings) as c:
        yield c


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "none" if f is None else "filtered")
def test_listing_replies_equal_exact_search(
    recall_env: RecallEnv, client: RecallClient, filters: RecallFilters | None
) -> None:
    catalog = recall_env.catalog
    for seed in ("L00000", "L00123", "L00399"):
        reply = client.similar(seed, k=15, filters=filters, timeout=20)
        assert reply.status is RecallStatus.OK, reply
        got = [(i.listing_id, i.score) for i in reply.items or ()]
        vector = catalog.vectors[catalog.index_of(seed)]
        assert_same_ranking(got, catalog.exact(vector, 15, filters, exclude=seed))
        assert seed not in {lid for lid, _ in got}
        for item in reply.items or ():
            assert catalog.passes(catalog.index_of(item.listing_id), filters)


def test_vector_replies_equal_exact_search(recall_env: RecallEnv, client: RecallClient) -> None:
    catalog = recall_env.catalog
    rng = np.random.default_rng(3)
    for filters in FILTERS[:4]:
        vector = rng.standard_normal(DIM).tolist()
        reply = client.similar_to_vector(vector, k=25, filters=filters, timeout=20)
        assert reply.status is RecallStatus.OK
        assert reply.model_version == catalog.model_version
        got = [(i.listing_id, i.score) for i in reply.items or ()]
        assert_same_ranking(got, catalog.exact(vector, 25, filters))


def test_not_found_and_wrong_dimension(client: RecallClient) -> None:
    missing = client.similar("L99999", k=3, timeout=20)
    assert (missing.status, missing.reason) == (RecallStatus.NOT_FOUND, "listing_not_indexed")
    wrong = client.similar_to_vector([1.0, 2.0], k=3, timeout=20)
    assert (wrong.status, wrong.reason) == (RecallStatus.INVALID, "dimension_mismatch")
    assert client.stats.pending == 0


def test_async_client_many_concurrent(recall_env: RecallEnv, worker: WorkerThread) -> None:
    catalog = recall_env.catalog

    async def main() -> None:
        client = await asyncio.to_thread(AsyncRecallClient, recall_env.settings)
        async with client:
            seeds = [f"L{i:05d}" for i in range(0, 400, 8)]
            replies = await asyncio.gather(*(client.similar(s, k=5, timeout=30) for s in seeds))
            for seed, reply in zip(seeds, replies, strict=True):
                assert reply.status is RecallStatus.OK
                vector = catalog.vectors[catalog.index_of(seed)]
                got = [(i.listing_id, i.score) for i in reply.items or ()]
                assert_same_ranking(got, catalog.exact(vector, 5, exclude=seed))
            stats = client.stats
            assert (stats.replies, stats.pending, stats.unknown, stats.mismatched) == (50, 0, 0, 0)

    asyncio.run(main())


def raw_producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "log_level": 0})


def raw_consumer(bootstrap: str, topic: str, *partitions: int):
    """A plain consumer of ``partitions`` of ``topic``, from their current end."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "log_level": 0}
    )
    assignment = []
    for partition in partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        assignment.append(TopicPartition(topic, partition, high if high >= 0 else OFFSET_END))
    consumer.assign(assignment)
    return consumer


def wait_for(consumer, n: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(message)
    return got


def spring_request(**fields: object) -> bytes:
    payload = {"schema_version": 1, "request_id": "spring-1", "k": 4}
    payload.update(fields)
    return json.dumps(payload).encode()


def test_spring_style_request_is_answered_on_its_partition(
    recall_env: RecallEnv, worker: WorkerThread
) -> None:
    s = recall_env.settings
    correlation = os.urandom(16)
    consumer = raw_consumer(s.bootstrap_servers, s.topic_recall_replies, 1)
    producer = raw_producer(s.bootstrap_servers)
    try:
        producer.produce(
            s.topic_recall_requests,
            value=spring_request(query={"listing_id": "L00042"}),
            key=b"L00042",
            headers=[
                (REPLY_TOPIC_HEADER, s.topic_recall_replies.encode()),
                (CORRELATION_ID_HEADER, correlation),
                (REPLY_PARTITION_HEADER, encode_reply_partition(1)),
            ],
        )
        producer.flush(10)
        [message] = wait_for(consumer, 1)
    finally:
        consumer.close()
    assert message.partition() == 1
    assert dict(message.headers())[CORRELATION_ID_HEADER] == correlation
    assert message.key() == b"L00042"
    reply = decode_recall_reply(message.value())
    assert (reply.status, reply.request_id, len(reply.items or ())) == (
        RecallStatus.OK,
        "spring-1",
        4,
    )


def test_every_request_gets_exactly_one_reply(recall_env: RecallEnv, worker: WorkerThread) -> None:
    """Garbage, hostile filters, expired and unroutable requests: one reply each, worker alive."""
    s = recall_env.settings
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    cases: dict[bytes, tuple[bytes | None, str, str | None]] = {
        b"garbage": (b"\x00\xffnot json", "invalid", "malformed_json"),
        b"empty": (None, "invalid", "malformed_json"),
        # Categories are free text: a quote is matched literally (no such category: no items)...
        b"hostile-category": (
            spring_request(
                request_id="h1",
                query={"listing_id": "L00001"},
                filters={"categories": ['shoes" or category != "x']},
            ),
            "ok",
            None,
        ),
        # ... while a control character is refused.
        b"control-category": (
            spring_request(
                request_id="h2",
                query={"listing_id": "L00001"},
                filters={"categories": ["shoes\u0007"]},
            ),
            "invalid",
            None,
        ),
        b"hostile-seller": (
            spring_request(
                request_id="h2",
                query={"listing_id": "L00001"},
                filters={"exclude_sellers": ['S1"] or seller_id not in ["']},
            ),
            "invalid",
            None,
        ),
        b"hostile-unicode": (
            spring_request(
                request_id="h3",
                query={"listing_id": "L00001\u202e\\"},
            ),
            "invalid",
            None,
        ),
        b"expired": (
            spring_request(request_id="e1", query={"listing_id": "L00001"}, deadline=past),
            "expired",
            "deadline_passed",
        ),
        b"unknown-key": (
            spring_request(request_id="u1", query={"listing_id": "L00001"}, surprise=1),
            "ok",
            None,
        ),
    }
    consumer = raw_consumer(s.bootstrap_servers, s.topic_recall_replies, 0, 1)
    producer = raw_producer(s.bootstrap_servers)
    try:
        for cid, (value, _, _) in cases.items():
            producer.produce(
                s.topic_recall_requests,
                value=value,
                headers=[
                    (REPLY_TOPIC_HEADER, s.topic_recall_replies.encode()),
                    (CORRELATION_ID_HEADER, cid),
                    (REPLY_PARTITION_HEADER, encode_reply_partition(0)),
                ],
            )
        # No reply topic at all: the reply goes to the default replies topic (partition by key).
        producer.produce(
            s.topic_recall_requests,
            value=spring_request(request_id="d1", query={"listing_id": "L00001"}),
            key=b"fallback",
            headers=[(CORRELATION_ID_HEADER, b"fallback")],
        )
        # A reply topic that does not exist: nothing can be sent; the worker must carry on.
        producer.produce(
            s.topic_recall_requests,
            value=spring_request(request_id="n1", query={"listing_id": "L00001"}),
            headers=[(REPLY_TOPIC_HEADER, b"no.such.topic"), (CORRELATION_ID_HEADER, b"lost")],
        )
        producer.flush(10)
        everything = wait_for(consumer, len(cases) + 1)
        everything += wait_for(consumer, 1, 2)  # nothing more may come (e.g. for "lost")
    finally:
        consumer.close()
    fallback = [m for m in everything if m.key() == b"fallback"]
    messages = [m for m in everything if m.key() != b"fallback"]
    assert all(m.partition() == 0 for m in messages)
    got = {
        dict(m.headers())[CORRELATION_ID_HEADER]: decode_recall_reply(m.value()) for m in messages
    }
    assert set(got) == set(cases)
    assert len(messages) == len(cases)
    for cid, (_, status, reason) in cases.items():
        assert got[cid].status.value == status, (cid, got[cid])
        if cid == b"hostile-category":
            assert got[cid].items == ()
        if reason is not None:
            assert got[cid].reason == reason
        if status == "invalid":
            assert got[cid].reason
    [reply] = [decode_recall_reply(m.value()) for m in fallback]
    assert (reply.request_id, reply.status) == ("d1", RecallStatus.OK)
    assert dict(fallback[0].headers())[CORRELATION_ID_HEADER] == b"fallback"
    # The worker is still alive and answering.
    with RecallClient(s) as c:
        assert c.similar("L00001", k=1, timeout=20).status is RecallStatus.OK


def test_hostile_strings_are_matched_literally_by_milvus(
    milvus: str, recall_env: RecallEnv
) -> None:
    """Below the schema: expressions built from hostile values match them as plain text."""
    from vitrine.vectorstore import CollectionLayout, ensure_collection, open_client, upsert_rows

    hostile = [
        'x" or 1==1 or category == "y',
        "back\\slash",
        '\\" or true or "',
        "trailing\\",
        "日本語 ✓",
        "plain",
    ]
    name = f"t_{uuid.uuid4().hex[:10]}_hostile"
    client = open_client(milvus)
    try:
        ensure_collection(client, CollectionLayout(name, DIM, "FLAT"))
        rows = []
        for i, category in enumerate(hostile * 2):
            row = recall_env.catalog.rows()[i]
            rows.append({**row, "listing_id": f"H{i}", "category": category, "seller_id": category})
        _count, token = upsert_rows(client, name, rows)
        index = MilvusIndex(client, CollectionLayout(name, DIM, "FLAT"))
        query = [recall_env.catalog.vectors[0].tolist()]
        for value in hostile:
            expected = {f"H{i}" for i, c in enumerate(hostile * 2) if c == value}
            # Categories are free text, so the schema lets these through to the expression.
            only = RecallFilters(categories=(value,))
            [hits] = index.search(query, filter_expression(only), 50, write_token=token)
            assert {h.listing_id for h in hits} == expected, value
            but = RecallFilters.model_construct(exclude_sellers=(value,), exclude_listings=())
            [hits] = index.search(query, filter_expression(but), 50, write_token=token)
            assert {h.listing_id for h in hits} == {f"H{i}" for i in range(12)} - expected
    finally:
        client.drop_collection(name)
        client.close()


@pytest.fixture
def idle_requests(recall_env: RecallEnv):
    """Settings whose requests topic no worker reads (yet)."""
    topic = f"t_{uuid.uuid4().hex[:10]}.idle"
    create_topics(recall_env.settings.bootstrap_servers, {topic: 1})
    yield recall_env.settings.model_copy(
        update={"topic_recall_requests": topic, "recall_group_id": f"{topic}.g"}
    )
    delete_topics(recall_env.settings.bootstrap_servers, [topic])


def test_timeout_then_late_reply_is_dropped(idle_requests) -> None:
    with RecallClient(idle_requests) as c:
        with pytest.raises(RecallTimeout):
            c.similar("L00001", k=3, timeout=0.5)
        assert c.stats.pending == 0 and c.stats.timeouts == 1
        # A worker that comes up now answers "expired" (deadline passed): a late reply.
        late = WorkerThread(idle_requests).start()
        try:
            deadline = time.monotonic() + 30
            while c.stats.late < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            late.stop()
        stats = c.stats
        assert (stats.late, stats.unknown, stats.replies, stats.pending) == (1, 0, 0, 0)


def test_pending_map_is_bounded(idle_requests) -> None:
    import threading

    with RecallClient(idle_requests, max_pending=2) as c:

        def wait_out() -> None:
            with pytest.raises(RecallTimeout):
                c.similar("L1", k=1, timeout=3)

        waiting = [threading.Thread(target=wait_out) for _ in range(2)]
        for t in waiting:
            t.start()
        deadline = time.monotonic() + 5
        while c.stats.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(RecallBackpressure):
            c.similar("L1", k=1, timeout=3)
        for t in waiting:
            t.join()
        assert c.stats.pending == 0 and c.stats.timeouts == 2


def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        consumer.close()


def test_new_client_reads_its_warm_up_record_back_before_returning(
    recall_env: RecallEnv, worker: WorkerThread
) -> None:
    """Construction waits until the client's producer and reply consumer both work (a fresh
    idempotent producer otherwise holds the first request ~0.5 s); the warm-up record is
    neither a reply nor counted as one."""
    s = recall_env.settings
    with RecallClient(s) as c:
        assert c._router._warm.is_set()
        assert end_offset(s.bootstrap_servers, c.reply_topic, 0) == 1  # the warm-up record
        assert c.similar("L00007", k=3, timeout=10).status is RecallStatus.OK
        stats = c.stats
        assert (stats.sent, stats.replies, stats.unknown, stats.late) == (1, 1, 0, 0)


def test_client_on_a_pinned_reply_topic_writes_no_warm_up_record(recall_env: RecallEnv) -> None:
    """A pinned reply topic is shared with other clients, which would see a stranger's record."""
    s = recall_env.settings
    before = end_offset(s.bootstrap_servers, s.topic_recall_replies, 1)
    with RecallClient(s, reply_topic=s.topic_recall_replies, reply_partition=1) as c:
        assert not c._router._warm.is_set()
    assert end_offset(s.bootstrap_servers, s.topic_recall_replies, 1) == before


def test_cli_burst_mode_answers_and_exits(recall_env: RecallEnv, idle_requests) -> None:
    s = idle_requests
    consumer = raw_consumer(s.bootstrap_servers, s.topic_recall_replies, 0)
    producer = raw_producer(s.bootstrap_servers)
    for i in range(5):
        producer.produce(
            s.topic_recall_requests,
            value=spring_request(request_id=f"b{i}", query={"listing_id": f"L{i:05d}"}),
            headers=[
                (REPLY_TOPIC_HEADER, s.topic_recall_replies.encode()),
                (CORRELATION_ID_HEADER, f"b{i}".encode()),
                (REPLY_PARTITION_HEADER, encode_reply_partition(0)),
            ],
        )
    producer.flush(10)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "recall", "--burst"],
        env=worker_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    replies = wait_for(consumer, 5)
    consumer.close()
    assert sorted(str(decode_recall_reply(m.value()).request_id) for m in replies) == [
        f"b{i}" for i in range(5)
    ]
    assert all(decode_recall_reply(m.value()).status is RecallStatus.OK for m in replies)
