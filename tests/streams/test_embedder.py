"""The embedder end to end: real broker, milvus-lite server, loopback image server."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from schemas import decode_catalogue_entry
from streams.app import Embedder
from streams.settings import EmbedderSettings
from tests.streams import scenario
from tests.streams.harness import ImageServer, produce, read_all

pytestmark = pytest.mark.integration


def check_outcome(settings: EmbedderSettings, sc: scenario.Scenario) -> int:
    """Milvus holds exactly the final listings once each; the DLQ exactly the poison."""
    rows = scenario.milvus_rows(settings)
    ids = [row["listing_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a listing has more than one row"
    assert {row["listing_id"]: row["version"] for row in rows} == sc.final
    letters = list(scenario.dead_letters(read_all(settings, settings.topic_dlq)))
    unique = {pos: (value, letter) for pos, value, letter in letters}
    got = Counter((value, letter.reason) for value, letter in unique.values())
    assert got == Counter(sc.poison.items())
    for value, letter in unique.values():
        assert letter.topic == settings.topic_events
        assert letter.message
        assert letter.stage.value in {"decode", "validate", "fetch", "decode_image"}
        assert value in sc.poison
    return len(letters) - len(unique)


def test_two_thousand_mixed_events(
    embedder_settings: EmbedderSettings, image_server: ImageServer
) -> None:
    settings = embedder_settings
    sc = scenario.build(image_server, total=2000, cap=settings.fetch_max_bytes)
    produce(settings, settings.topic_events, sc.records)
    embedder = Embedder(settings)
    assert asyncio.run(embedder.run(max_events=len(sc.records))) == 0
    assert check_outcome(settings, sc) == 0  # one clean run: no dead letter twice
    ends = scenario.end_offsets(settings, settings.topic_partitions)
    assert scenario.committed(settings, settings.topic_partitions) == ends
    embedded = read_all(settings, settings.topic_embedded)
    assert embedded, "no embedded events published"
    assert_cover_vectors(settings, image_server, sc)
    # The catalogue's state, compacted by key, is exactly the live listings at their versions.
    latest: dict[bytes, bytes | None] = {}
    for msg in read_all(settings, settings.topic_state):
        latest[msg.key()] = msg.value()
    catalogue = {k.decode(): decode_catalogue_entry(v).version for k, v in latest.items() if v}
    assert catalogue == sc.final


def assert_cover_vectors(settings: EmbedderSettings, server: ImageServer, sc: Any) -> None:
    """Every live row carries its cover in the model's shared space: the image tower and its
    head applied to the cover it was written with (the scenario has five covers)."""
    import numpy as np

    from encoders.preprocess import preprocess_image
    from encoders.runtime import Encoder
    from vitrine.vectorstore import connect

    encoder = Encoder.load(settings.resolved_model_dir)
    covers = [server.images[f"/c{i}.png"] for i in range(len(scenario.COLOURS))]
    pixels = np.stack([preprocess_image(c, encoder.image_spec) for c in covers])
    expected = encoder.image_embedding(pixels)
    client = connect(settings)
    try:
        rows = client.query(
            settings.milvus_collection,
            ids=sorted(sc.final),
            output_fields=["listing_id", "image_vector"],
        )
    finally:
        client.close()
    assert len(rows) == len(sc.final)
    for row in rows:
        vector = np.asarray(row["image_vector"], np.float32)
        distances = np.abs(expected - vector).max(axis=1)
        assert distances.min() < 1e-4, (row["listing_id"], distances)
