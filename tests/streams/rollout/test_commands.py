"""The rollout's steps and their refusals on the real broker and Milvus, with a small catalogue
written straight to the state topic (no embedder): start, resume, a second model refused,
cutover, rollback, cutover again, finish, and a new rollout from the finished one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from encoders.manifest import Manifest
from schemas import CatalogueEntry, Price, encode
from streams.rollout import commands
from streams.rollout.commands import RolloutRefused, alias_name
from streams.rollout.job import RolloutJob
from streams.rollout.settings import RolloutSettings
from streams.settings import EmbedderSettings
from tests.streams.harness import ImageServer, png, produce
from tests.stub_model import build_stub_model
from vitrine.settings import load
from vitrine.vectorstore import CollectionLayout, connect, ensure_collection, vector_dims

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(embedder_settings: EmbedderSettings, tmp_path: Path) -> Iterator[RolloutSettings]:
    fields = {k: getattr(embedder_settings, k) for k in EmbedderSettings.model_fields}
    fields["home"] = tmp_path / "home"  # the job's cover cache and progress file
    yield load(RolloutSettings, **fields)
    client = connect(embedder_settings)
    try:
        with contextlib.suppress(Exception):  # a Milvus server keeps the live alias
            client.drop_alias(alias_name(embedder_settings.milvus_collection))
        for name in client.list_collections():
            if name.startswith(embedder_settings.milvus_collection):
                client.drop_collection(name)
    finally:
        client.close()


def write_catalogue(settings: RolloutSettings, server: ImageServer, n: int) -> None:
    records = []
    for i in range(n):
        data = png((i * 20 % 256, 90, 200 - i), 24)
        path = f"/{settings.milvus_collection}/{i}.png"
        server.images[path] = data
        entry = CatalogueEntry(
            listing_id=f"C{i}",
            version=1,
            occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
            title=f"green boot {i}",
            cover_url=server.url(path),
            cover_sha256=hashlib.sha256(data).hexdigest(),
            category="shoes",
            price=Price(amount=10.0 + i, currency="EUR"),
            seller_id="s1",
            marketplace="m1",
        )
        records.append((entry.listing_id.encode(), encode(entry)))
    produce(settings, settings.topic_state, records)


def fill(settings: RolloutSettings) -> int:
    rollout = commands.read(settings).rollout
    assert rollout is not None
    return asyncio.run(RolloutJob(settings, rollout).run(until_caught_up=True)).encoded


def rows(settings: RolloutSettings, collection: str) -> int:
    client = connect(settings)
    try:
        return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
    finally:
        client.close()


def test_steps_and_refusals(
    settings: RolloutSettings,
    image_server: ImageServer,
    stub_model: Path,
    tmp_path: Path,
) -> None:
    second = build_stub_model(tmp_path / "second", seed=1)
    third = build_stub_model(tmp_path / "third", seed=2)
    old = Manifest.read(stub_model).model_version
    client = connect(settings)
    try:  # the live collection as the embedder would have made it (empty is enough here)
        ensure_collection(client, CollectionLayout(settings.milvus_collection, 32, "FLAT", 8))
        # Milvus before 2.4 (the local server) keeps one vector field: no cover vectors there.
        covers = "image_vector" in vector_dims(
            client.describe_collection(settings.milvus_collection)
        )
        client.insert(
            settings.milvus_collection,
            [
                {
                    "listing_id": "C0",
                    "embedding": [0.1] * 32,
                    **({"image_vector": [0.1] * 8} if covers else {}),
                    "mismatch_score": 0.0,
                    "category": "shoes",
                    "price": 1.0,
                    "currency": "EUR",
                    "seller_id": "s1",
                    "version": 1,
                    "model_version": old,
                    "occurred_at_ms": 0,
                    "updated_at_ms": 0,
                }
            ],
        )
    finally:
        client.close()
    write_catalogue(settings, image_server, 30)

    with pytest.raises(RolloutRefused) as refused:
        commands.cutover(settings, wait_s=0)
    assert refused.value.reason == "no_rollout"
    with pytest.raises(RolloutRefused) as refused:
        commands.start(settings, stub_model)
    assert refused.value.reason == "same_model"  # the live rows' model

    started = commands.start(settings, second)
    assert (started.live_collection, started.live_model_version) == (
        settings.milvus_collection,
        old,
    )
    assert started.state_end_offsets and sum(started.state_end_offsets) == 30
    control = commands.read(settings)
    assert control.pointer is not None and control.pointer.collection == settings.milvus_collection
    assert commands.start(settings, second) == started  # the same model resumes
    with pytest.raises(RolloutRefused) as refused:
        commands.start(settings, third)
    assert refused.value.reason == "rollout_in_progress"
    with pytest.raises(RolloutRefused) as refused:
        commands.rollback(settings)
    assert refused.value.reason == "wrong_phase"
    with pytest.raises(RolloutRefused) as refused:
        commands.cutover(settings, wait_s=0)
    assert refused.value.reason == "candidate_incomplete"
    assert "30 missing" in str(refused.value)

    written = REGISTRY.get_sample_value("vitrine_rollout_records_total", {"outcome": "written"})
    assert fill(settings) == 30
    after = REGISTRY.get_sample_value("vitrine_rollout_records_total", {"outcome": "written"})
    assert (after or 0) - (written or 0) == 30
    assert REGISTRY.get_sample_value("vitrine_rollout_bulk_remaining_records") == 0
    assert REGISTRY.get_sample_value("vitrine_rollout_behind_records") == 0
    status = commands.status(settings)
    assert status["rows"] == {"previous": 1, "candidate": 30}
    assert (status["bulk_remaining"], status["behind"]) == (0, 0)
    assert status["rate_records_per_s"] is not None  # the job's progress file

    cut = commands.cutover(settings, wait_s=0)
    assert cut.phase.value == "cut_over"
    pointer = commands.read(settings).pointer
    assert pointer is not None and pointer.collection == started.candidate_collection
    assert pointer.model_dir == str(second.resolve())
    back = commands.rollback(settings)
    assert back.phase.value == "rolled_back"
    assert commands.read(settings).pointer.collection == settings.milvus_collection  # type: ignore[union-attr]
    commands.cutover(settings, wait_s=0)
    done = commands.finish(settings)
    assert done.phase.value == "finished"
    client = connect(settings)
    try:
        assert not client.has_collection(settings.milvus_collection)  # the old one, dropped
        assert client.has_collection(started.candidate_collection)
    finally:
        client.close()
    with pytest.raises(RolloutRefused) as refused:
        commands.rollback(settings)
    assert refused.value.reason == "wrong_phase"

    # The next rollout starts from the finished one's candidate.
    following = commands.start(settings, third)
    assert following.live_collection == started.candidate_collection
    assert following.live_model_version == started.candidate_model_version
    assert following.candidate_collection.startswith(settings.milvus_collection + "__")
    assert fill(settings) == 30  # a new rollout reads the state from its start
    assert rows(settings, following.candidate_collection) == 30
