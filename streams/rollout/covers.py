"""Cover bytes for the rollout job: from the disk cache by sha256, else fetched (guarded
fetcher) and checked against the sha256 the catalogue recorded."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schemas import CatalogueEntry
from streams.errors import FetchError
from streams.fetch import FetchedImage
from streams.rollout import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cover:
    """The bytes of one listing's cover and their sha256."""

    data: bytes
    sha256: str


class CoverFetcher(Protocol):
    """What the store needs from :class:`~streams.fetch.ImageFetcher`."""

    async def fetch(self, url: str) -> FetchedImage:
        """The image at ``url``, or :class:`~streams.errors.FetchError`."""
        ...


class CoverStore:
    """``sha256 -> bytes`` files under ``directory`` (None: no cache), written atomically and
    only with bytes whose hash was checked."""

    def __init__(self, fetcher: CoverFetcher, directory: Path | None) -> None:
        self._fetcher = fetcher
        self._directory = directory

    def _path(self, sha256: str) -> Path | None:
        if self._directory is None:
            return None
        return self._directory / sha256[:2] / sha256

    def cached(self, sha256: str) -> bytes | None:
        """The cached bytes of ``sha256``, if present and intact."""
        path = self._path(sha256)
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:  # a torn or tampered file
            path.unlink(missing_ok=True)
            return None
        return data

    def keep(self, sha256: str, data: bytes) -> None:
        """Cache ``data`` (its hash is ``sha256``)."""
        path = self._path(sha256)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    async def get(self, entry: CatalogueEntry) -> Cover:
        """The cover of ``entry``; raises :class:`~streams.errors.FetchError` when it cannot be
        fetched. Bytes that differ from the recorded hash (the image behind the URL changed
        since) are used as fetched and counted: the live embedder would embed them too."""
        data = self.cached(entry.cover_sha256)
        if data is not None:
            metrics.COVERS.labels(source="cache").inc()
            return Cover(data, entry.cover_sha256)
        try:
            image = await self._fetcher.fetch(entry.cover_url)
        except FetchError:
            metrics.COVERS.labels(source="failed").inc()
            raise
        if image.sha256 != entry.cover_sha256:
            metrics.COVERS.labels(source="changed").inc()
            log.info("cover of %s changed since version %d", entry.listing_id, entry.version)
        else:
            metrics.COVERS.labels(source="fetched").inc()
        self.keep(image.sha256, image.data)
        return Cover(image.data, image.sha256)
