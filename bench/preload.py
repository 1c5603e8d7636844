"""Preloading a listings collection with N clustered rows, on milvus-lite or a Milvus server.

Shared by the benchmarks that must measure at size (recall at 100k rows; embedder freshness
with 100k rows already stored, where milvus-lite's upsert cost grows with the collection):

    from preload import preload           # with bench/ on sys.path
    corpus = preload(client, layout, items=100_000)   # index built and loaded on return

Rows have the embedder's field layout (vitrine.vectorstore), ids ``B0000000``.., vectors
drawn around CLUSTERS centres (neighbourhoods like embeddings of similar products; i.i.d.
Gaussian vectors have none, and any ANN index's recall on them is meaningless). On milvus-lite
the FLAT index is swapped for IVF_FLAT once large, as the embedder's start-up does.

    python bench/preload.py --collection listings --items 100000 --dim 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.vectorstore import (
    IMAGE_VECTOR_FIELD,
    CollectionLayout,
    ensure_collection,
    ensure_lite_ann_index,
    vector_dims,
)

CATEGORIES = ("shoes", "bags", "watches", "toys", "home", "garden", "books", "phones")
CLUSTERS = 2000
SPREAD = 0.5


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = [Path(t, "children").read_text().split() for t in tasks]
    except OSError:
        return []
    return [int(child) for listed in found for child in listed]


def cpu_seconds(pid: int, skip: frozenset[int] = frozenset()) -> float | None:
    """User + system CPU seconds so far of a process and its live descendants (the embedder's
    towers run in a child process) other than those in ``skip`` (accounted apart), Linux
    /proc; None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = [child for child in _children(pid) if child not in skip]
    return own + sum(cpu_seconds(child, skip) or 0.0 for child in children)


def process_cpu_s(pids: list[int], skip: frozenset[int] = frozenset()) -> float:
    """CPU seconds the processes (and their descendants but ``skip``) have used so far; gone
    ones count 0."""
    return sum(cpu_seconds(pid, skip) or 0.0 for pid in pids)


def wait_until_idle(
    pids: list[int], quiet_cores: float = 0.15, quiet_s: int = 3, limit_s: float = 240.0
) -> float:
    """Wait until the processes used < ``quiet_cores`` for ``quiet_s`` seconds in a row (at
    most ``limit_s``); the seconds waited. After a bulk insert a Milvus server keeps compacting
    segments and building their indexes for a while: a timed phase that starts then measures
    that background work (a direct search p99 of 200+ ms against 9 ms once quiet)."""
    started = time.monotonic()
    quiet = 0
    last = process_cpu_s(pids)
    while quiet < quiet_s and time.monotonic() - started < limit_s:
        time.sleep(1.0)
        now = process_cpu_s(pids)
        quiet = quiet + 1 if now - last < quiet_cores else 0
        last = now
    return time.monotonic() - started


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def centres(dim: int) -> np.ndarray:
    """The cluster centres every preload and query set of this dimension shares."""
    return np.random.default_rng(1).standard_normal((CLUSTERS, dim))


def clustered(rng: np.random.Generator, around: np.ndarray, n: int) -> np.ndarray:
    """``n`` float32 vectors, each a random centre plus Gaussian noise of SPREAD per axis."""
    picks = rng.integers(0, len(around), n)
    noise = rng.standard_normal((n, around.shape[1]))
    return (around[picks] + SPREAD * noise).astype(np.float32)


def insert_rows(client: Any, layout: CollectionLayout, items: int, batch: int = 2000) -> np.ndarray:
    """Create the collection if needed and insert ``items`` rows; return their L2-normalised
    vectors (for exact search). Where the collection stores cover vectors (``shared_dim``,
    not on a Milvus 2.3 server) rows carry random ones too."""
    ensure_collection(client, layout)
    covers = vector_dims(client.describe_collection(layout.name)).get(IMAGE_VECTOR_FIELD)
    rng = np.random.default_rng(42)
    around = centres(layout.dim)
    started = time.monotonic()
    normalised = np.empty((items, layout.dim), dtype=np.float32)
    for start in range(0, items, batch):
        n = min(batch, items - start)
        vectors = clustered(rng, around, n)
        normalised[start : start + n] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cover = rng.standard_normal((n, covers)).astype(np.float32) if covers else None
        rows = [
            {
                **({IMAGE_VECTOR_FIELD: cover[i].tolist()} if cover is not None else {}),
                "listing_id": f"B{start + i:07d}",
                "embedding": vectors[i].tolist(),
                "mismatch_score": float(rng.integers(0, 65) / 64),
                "category": CATEGORIES[(start + i) % len(CATEGORIES)],
                "price": float(round(rng.uniform(1, 1000), 2)),
                "currency": "EUR",
                "seller_id": f"S{(start + i) % 997}",
                "version": 1,
                "model_version": "bench.1",
                "occurred_at_ms": 0,
                "updated_at_ms": 0,
            }
            for i in range(n)
        ]
        client.insert(layout.name, rows)
        done = start + n
        if done % (batch * 20) == 0 or done == items:
            rate = done / (time.monotonic() - started)
            log(f"  inserted {done:,}/{items:,} rows ({rate:,.0f} rows/s)")
    return normalised


def wait_index(client: Any, layout: CollectionLayout, items: int, timeout_s: float = 900) -> dict:
    """Flush, wait until every row is indexed (a Milvus server builds indexes in the
    background), load; return the index description and the seconds it took."""
    started = time.monotonic()
    client.flush(layout.name)
    described: dict = {}
    while time.monotonic() - started < timeout_s:
        described = client.describe_index(layout.name, "embedding")
        indexed = int(described.get("indexed_rows", 0))
        pending = int(described.get("pending_index_rows", 0))
        total = int(described.get("total_rows", 0))
        if total == 0 or (indexed >= items and pending == 0):  # milvus-lite reports no counts
            break
        time.sleep(2)
    else:
        raise RuntimeError(f"index of {layout.name} not built in {timeout_s} s: {described}")
    client.load_collection(layout.name)
    # Strong once: every row is visible before anything is timed.
    client.query(layout.name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    described["seconds_to_build_and_load"] = round(time.monotonic() - started, 1)
    return described


def preload(
    client: Any, layout: CollectionLayout, items: int, batch: int = 2000
) -> tuple[CollectionLayout, np.ndarray, dict]:
    """Insert ``items`` rows, index them as Vitrine does on this kind of Milvus, wait until
    searchable; return (the layout with the index in place, normalised vectors, index info)."""
    corpus = insert_rows(client, layout, items, batch)
    if layout.index_type == "FLAT":  # milvus-lite: what the embedder's start-up does
        layout = CollectionLayout(layout.name, layout.dim, ensure_lite_ann_index(client, layout))
    return layout, corpus, wait_index(client, layout, items)


def main(argv: list[str] | None = None) -> int:
    from vitrine.settings import VitrineSettings, load
    from vitrine.vectorstore import connect

    parser = argparse.ArgumentParser(description="Preload a listings collection.")
    parser.add_argument("--collection", required=True)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args(argv)
    settings = load(VitrineSettings, milvus_collection=args.collection)
    client = connect(settings, timeout_s=120)
    try:
        layout = CollectionLayout.for_settings(settings, args.dim)
        layout, _corpus, index = preload(client, layout, args.items)
        log(f"{args.collection}: {args.items:,} rows, {layout.index_type} {index}")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
