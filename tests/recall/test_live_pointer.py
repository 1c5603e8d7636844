"""The worker follows the live pointer of the control topic without a restart: every reply is
answered from one collection and labelled with the model that wrote it, also while the pointer
moves under continuous traffic."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from recall import RecallClient
from recall.settings import RecallSettings
from schemas import LIVE_KEY, LivePointer, PointerReason, RecallStatus, encode
from vitrine.control import write_control
from vitrine.settings import load
from vitrine.topics import TopicSpec, ensure_topics

from .conftest import (
    Catalog,
    WorkerThread,
    assert_same_ranking,
    create_topics,
    delete_topics,
    drop_collection,
    fill_collection,
    make_catalog,
)

pytestmark = pytest.mark.integration


def point(settings: RecallSettings, collection: str, model: str) -> None:
    pointer = LivePointer(
        collection=collection,
        model_version=model,
        changed_at=datetime.now(UTC),
        reason=PointerReason.CUTOVER,
    )
    write_control(settings, LIVE_KEY, encode(pointer))


@pytest.fixture
def two_models(kafka: str, milvus: str) -> Iterator[tuple[RecallSettings, Catalog, Catalog]]:
    """Collection A (model m-a) and B (same listings, other vectors, model m-b); the worker's
    settings name A; a control topic without a pointer yet."""
    tag = uuid.uuid4().hex[:10]
    requests, replies, control = f"t_{tag}.requests", f"t_{tag}.replies", f"t_{tag}.control"
    a = replace(make_catalog(300, seed=1), model_version="m-a")
    b = replace(make_catalog(300, seed=2), model_version="m-b")
    create_topics(kafka, {requests: 2, replies: 1})
    settings = load(
        RecallSettings,
        kafka_bootstrap=kafka,
        milvus_collection=f"t_{tag}_a",
        topic_recall_requests=requests,
        topic_recall_replies=replies,
        topic_control=control,
        recall_group_id=f"t_{tag}.workers",
        recall_poll_timeout_s=0.1,
        recall_session_timeout_ms=6000,
        metrics_port=0,
    )
    ensure_topics(settings, [TopicSpec(control, 1, 1, {"cleanup.policy": "compact"})])
    fill_collection(milvus, f"t_{tag}_a", a)
    fill_collection(milvus, f"t_{tag}_b", b)
    try:
        yield settings, a, b
    finally:
        delete_topics(kafka, [requests, replies, control])
        drop_collection(milvus, f"t_{tag}_a")
        drop_collection(milvus, f"t_{tag}_b")


def answered_from(catalog: Catalog, seed: str, reply: object) -> bool:
    """The reply's items are the exact top-k of ``seed`` within ``catalog``."""
    got = [(i.listing_id, i.score) for i in reply.items or ()]  # type: ignore[attr-defined]
    want = catalog.exact(catalog.vectors[catalog.index_of(seed)], 10, exclude=seed)
    try:
        assert_same_ranking(got, want)
    except AssertionError:
        return False
    return True


def test_pointer_moves_are_followed_under_traffic_and_no_reply_mixes_models(
    two_models: tuple[RecallSettings, Catalog, Catalog],
) -> None:
    settings, a, b = two_models
    catalogs = {a.model_version: a, b.model_version: b}
    collections = {"m-a": settings.milvus_collection, "m-b": settings.milvus_collection[:-1] + "b"}
    worker = WorkerThread(settings).start()
    replies: list[tuple[str, object]] = []
    stop = threading.Event()

    def traffic() -> None:
        with RecallClient(settings) as client:
            n = 0
            while not stop.is_set():
                seed = a.ids[n % len(a.ids)]
                replies.append((seed, client.similar(seed, k=10, timeout=20)))
                n += 1

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:

        def wait_for(model: str) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if replies and replies[-1][1].model_version == model:  # type: ignore[attr-defined]
                    return
                time.sleep(0.05)
            pytest.fail(f"replies never came from {model}")

        time.sleep(1.0)
        point(settings, collections["m-a"], "m-a")  # the initial pointer: same collection
        wait_for("m-a")
        point(settings, collections["m-b"], "m-b")  # cutover
        wait_for("m-b")
        assert worker.worker.live_collection == collections["m-b"]
        time.sleep(0.5)
        point(settings, collections["m-a"], "m-a")  # rollback
        wait_for("m-a")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
        worker.stop()
    assert len(replies) > 20
    models = [r.model_version for _, r in replies]  # type: ignore[attr-defined]
    assert all(r.status is RecallStatus.OK for _, r in replies), [  # type: ignore[attr-defined]
        r
        for _, r in replies
        if r.status is not RecallStatus.OK  # type: ignore[attr-defined]
    ][:3]
    assert set(models) == {"m-a", "m-b"}
    # Each reply is exactly the top 10 of the collection its label names: seed and neighbours
    # from one collection, never a seed looked up in one and searched in the other.
    wrong = [
        seed
        for seed, r in replies
        if not answered_from(catalogs[r.model_version], seed, r)  # type: ignore[attr-defined]
    ]
    assert wrong == []
    # The neighbours of the two models differ, so the check above can tell them apart.
    seed = a.ids[0]
    top_a = [lid for lid, _ in a.exact(a.vectors[0], 10, exclude=seed)]
    top_b = [lid for lid, _ in b.exact(b.vectors[0], 10, exclude=seed)]
    assert top_a != top_b


def test_a_worker_started_after_a_cutover_opens_the_pointed_collection(
    two_models: tuple[RecallSettings, Catalog, Catalog],
) -> None:
    settings, _, b = two_models
    point(settings, settings.milvus_collection[:-1] + "b", "m-b")
    worker = WorkerThread(settings).start()
    try:
        with RecallClient(settings) as client:
            reply = client.similar(b.ids[5], k=10, timeout=30)
    finally:
        worker.stop()
    assert reply.status is RecallStatus.OK and reply.model_version == "m-b"
    assert answered_from(b, b.ids[5], reply)
