"""Read your writes: a recall request with a write token sees that write at once.

Runs on whichever Milvus the session uses (milvus-lite by default, Milvus standalone in the
server pass of scripts/test.sh). On the server the worker searches at Bounded consistency, which
does not wait for recent writes: without the token, a row upserted a moment ago is usually not
visible yet, so this test fails if the worker dropped the token.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from recall import RecallClient
from schemas import RecallStatus
from vitrine.vectorstore import open_client, upsert_rows

from .conftest import DIM, RecallEnv, WorkerThread

pytestmark = pytest.mark.integration


@pytest.fixture
def client(recall_env: RecallEnv, worker: WorkerThread) -> Iterator[RecallClient]:
    with RecallClient(recall_env.settings) as c:
        yield c


def _row(listing_id: str, vector: np.ndarray) -> dict[str, object]:
    return {
        "listing_id": listing_id,
        "embedding": vector.tolist(),
        "mismatch_score": 0.25,
        "category": "shoes",
        "price": 10.0,
        "currency": "EUR",
        "seller_id": "S-new",
        "version": 1,
        "model_version": "m-test.1",
        "occurred_at_ms": 0,
        "updated_at_ms": 0,
    }


def test_a_request_with_the_write_token_sees_the_write(
    recall_env: RecallEnv, client: RecallClient
) -> None:
    settings = recall_env.settings
    store = open_client(settings.milvus_endpoint, settings.milvus_token)
    rng = np.random.default_rng(11)
    try:
        for attempt in range(5):
            listing_id = f"RYW{attempt}"
            vector = rng.standard_normal(DIM).astype(np.float32)
            row = _row(listing_id, vector)
            count, token = upsert_rows(store, settings.milvus_collection, [row])
            assert count == 1
            if settings.milvus_is_lite:
                assert token is None  # milvus-lite has no timestamps; every read sees the write
            else:
                assert token is not None and token > 0

            by_id = client.similar(listing_id, k=3, timeout=30, write_token=token)
            assert (by_id.status, by_id.reason) == (RecallStatus.OK, None), by_id
            by_vector = client.similar_to_vector(
                vector.tolist(), k=1, timeout=30, write_token=token
            )
            assert by_vector.status is RecallStatus.OK
            assert [i.listing_id for i in by_vector.items or ()] == [listing_id]
    finally:
        store.delete(settings.milvus_collection, ids=[f"RYW{i}" for i in range(5)])
        store.close()
