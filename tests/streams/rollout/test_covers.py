"""Covers of the rollout job: the disk cache by sha256 and the hash check (no network)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import CatalogueEntry, Price
from streams.errors import FetchError
from streams.fetch import FetchedImage
from streams.rollout.covers import CoverStore


class FakeFetcher:
    """``fetch`` like :class:`~streams.fetch.ImageFetcher`, from a dict; counts calls."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images
        self.calls = 0

    async def fetch(self, url: str) -> FetchedImage:
        self.calls += 1
        if url not in self.images:
            raise FetchError("HTTP 404", reason="not_found")
        data = self.images[url]
        return FetchedImage(url, data, hashlib.sha256(data).hexdigest())


def test_the_fake_fetcher_has_the_real_fetchers_signature() -> None:
    import inspect

    from streams.fetch import ImageFetcher

    assert inspect.signature(FakeFetcher.fetch) == inspect.signature(ImageFetcher.fetch)


def entry(url: str, data: bytes) -> CatalogueEntry:
    return CatalogueEntry(
        listing_id="L1",
        version=1,
        occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        title="red car",
        cover_url=url,
        cover_sha256=hashlib.sha256(data).hexdigest(),
        category="cars",
        price=Price(amount=1.0, currency="EUR"),
        seller_id="s1",
        marketplace="m1",
    )


def test_a_cover_is_fetched_once_then_read_from_the_cache(tmp_path: Path) -> None:
    fetcher = FakeFetcher({"http://img/a": b"cover-a"})
    store = CoverStore(fetcher, tmp_path)
    wanted = entry("http://img/a", b"cover-a")
    first = asyncio.run(store.get(wanted))
    second = asyncio.run(store.get(wanted))
    assert first.data == second.data == b"cover-a"
    assert fetcher.calls == 1
    # Another URL with the same bytes (a re-listed item) is not fetched either.
    assert asyncio.run(store.get(entry("http://img/other", b"cover-a"))).data == b"cover-a"
    assert fetcher.calls == 1


def test_changed_bytes_are_used_but_never_cached_under_the_recorded_hash(tmp_path: Path) -> None:
    fetcher = FakeFetcher({"http://img/a": b"new bytes"})
    store = CoverStore(fetcher, tmp_path)
    recorded = entry("http://img/a", b"old bytes")
    cover = asyncio.run(store.get(recorded))
    assert cover.data == b"new bytes" and cover.sha256 == hashlib.sha256(b"new bytes").hexdigest()
    assert store.cached(recorded.cover_sha256) is None
    assert asyncio.run(store.get(recorded)).data == b"new bytes"
    assert fetcher.calls == 2


def test_a_torn_cache_file_is_dropped_and_fetched_again(tmp_path: Path) -> None:
    fetcher = FakeFetcher({"http://img/a": b"cover-a"})
    store = CoverStore(fetcher, tmp_path)
    wanted = entry("http://img/a", b"cover-a")
    asyncio.run(store.get(wanted))
    path = tmp_path / wanted.cover_sha256[:2] / wanted.cover_sha256
    path.write_bytes(b"cov")  # a write cut short
    assert asyncio.run(store.get(wanted)).data == b"cover-a"
    assert fetcher.calls == 2


def test_a_missing_cover_raises_and_nothing_is_cached(tmp_path: Path) -> None:
    store = CoverStore(FakeFetcher({}), tmp_path)
    with pytest.raises(FetchError):
        asyncio.run(store.get(entry("http://img/gone", b"x")))
    assert list(tmp_path.iterdir()) == []


def test_without_a_directory_nothing_is_kept(tmp_path: Path) -> None:
    fetcher = FakeFetcher({"http://img/a": b"cover-a"})
    store = CoverStore(fetcher, None)
    wanted = entry("http://img/a", b"cover-a")
    asyncio.run(store.get(wanted))
    asyncio.run(store.get(wanted))
    assert fetcher.calls == 2
