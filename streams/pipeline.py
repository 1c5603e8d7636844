"""The embedder's stages, independent of faust: prepare -> encode -> sink, overlapped.

``prepare`` decodes, judges versions, fetches and preprocesses images for batch k+1 while
``encode`` runs the towers on batch k and ``sink`` writes batch k-1; the queues between them
are bounded, so a slow or failing stage (Milvus down) pauses everything upstream, down to the
Kafka consumer. Batches leave ``sink`` in the order they were formed, and only ``sink`` marks
offsets finished in the :class:`~streams.ledger.OffsetLedger`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from encoders.errors import EncoderError, ImageError
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from schemas import (
    ContractError,
    DeadLetter,
    DeadLetterStage,
    EmbeddedEvent,
    Outcome,
    dead_letter_headers,
    decode_listing_event,
    encode,
    freshness_seconds,
)
from schemas.errors import Reason
from streams import guard, metrics
from streams.cache import ImageCache
from streams.errors import EmbedderError, FetchError
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.guard import ListingState, Verdict
from streams.ledger import OffsetLedger
from streams.records import SourceRecord, Work
from streams.settings import EmbedderSettings
from streams.sink import Mutation, VectorSink
from vitrine.errors import VitrineError

log = logging.getLogger(__name__)

_DECODE_REASONS = {Reason.MALFORMED_JSON, Reason.PAYLOAD_TOO_LARGE, Reason.NOT_AN_OBJECT}


class Sender(Protocol):
    """Produces raw records; the returned awaitable resolves once the broker has them."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        """Queue one record for sending."""


class StateStore(Protocol):
    """The durable per-listing state (a faust table in production, a dict in tests)."""

    def get(self, key: bytes) -> Any:
        """The stored value or None."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        """Store a value (and its changelog record)."""


class Pipeline:
    """Micro-batching embedder pipeline; feed it with :meth:`submit`, run it with :meth:`run`."""

    def __init__(
        self,
        settings: EmbedderSettings,
        encoder: Encoder,
        fetcher: ImageFetcher,
        sink: VectorSink,
        sender: Sender,
        states: StateStore,
        ledger: OffsetLedger,
        runner: BlockingRunner,
        on_batch_done: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model_version = encoder.manifest.model_version
        self.fetcher = fetcher
        self.sink = sink
        self.sender = sender
        self.states = states
        self.ledger = ledger
        self.runner = runner
        self.cache = ImageCache(settings.image_cache_entries)
        self.on_batch_done = on_batch_done
        self.finished = 0
        depth = settings.pipeline_depth
        self._intake: asyncio.Queue[SourceRecord] = asyncio.Queue(settings.batch_size * 2)
        self._prepared: asyncio.Queue[list[Work]] = asyncio.Queue(depth)
        self._encoded: asyncio.Queue[list[Work]] = asyncio.Queue(depth)
        # States decided by `prepare` but not yet written by `sink`: key -> (partition, state).
        self._overlay: dict[bytes, tuple[int, ListingState]] = {}

    # -- feeding -----------------------------------------------------------------------------

    async def submit(self, record: SourceRecord) -> None:
        """Accept one record; waits while the pipeline is full (backpressure)."""
        self.ledger.register(record.topic, record.partition, record.offset)
        metrics.IN_FLIGHT.inc()
        await self._intake.put(record)

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Revoked partitions: drop their overlay entries and ledger rows."""
        numbers = {p for _, p in partitions}
        self._overlay = {k: v for k, v in self._overlay.items() if v[0] not in numbers}
        for topic, partition in partitions:
            self.ledger.forget(topic, partition)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the three stages until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._prepare_loop())
            group.create_task(self._encode_loop())
            group.create_task(self._sink_loop())

    async def _next_batch(self) -> list[SourceRecord]:
        batch = [await self._intake.get()]
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._intake.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _prepare_loop(self) -> None:
        while True:
            records = await self._next_batch()
            metrics.beat()
            metrics.BATCH_SIZE.observe(len(records))
            await self._prepared.put(await self.prepare(records))

    async def _encode_loop(self) -> None:
        while True:
            batch = await self._prepared.get()
            await self.encode(batch)
            await self._encoded.put(batch)

    async def _sink_loop(self) -> None:
        while True:
            batch = await self._encoded.get()
            await self.write(batch)
            metrics.beat()
            if self.on_batch_done is not None:
                await self.on_batch_done()

    # -- stage 1: decode, judge, fetch, preprocess ----------------------------------------------

    def _state_of(self, key: bytes) -> ListingState | None:
        if key in self._overlay:
            return self._overlay[key][1]
        return ListingState.from_json(self.states.get(key))

    def _dead_letter(self, work: Work, error: VitrineError, stage: DeadLetterStage) -> None:
        record = work.record
        work.dead_letter = DeadLetter.from_error(
            error,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=stage,
            model_version=self.model_version,
        )

    async def prepare(self, records: list[SourceRecord]) -> list[Work]:
        """Decode, judge and fetch one batch; every record comes back as a :class:`Work`."""
        batch = [Work(record) for record in records]
        latest: dict[bytes, Work] = {}
        for work in batch:
            try:
                event = decode_listing_event(work.record.value)
            except ContractError as exc:
                stage = (
                    DeadLetterStage.DECODE
                    if exc.reason in _DECODE_REASONS
                    else DeadLetterStage.VALIDATE
                )
                self._dead_letter(work, exc, stage)
                continue
            key = event.listing_id.encode()
            if work.record.key is not None and work.record.key != key:
                error = ContractError(
                    "record key differs from listing_id", reason=Reason.INVALID_VALUE
                )
                error.field = "key"
                self._dead_letter(work, error, DeadLetterStage.VALIDATE)
                continue
            work.event = event
            earlier = latest.get(key)
            if earlier is None:
                view = work.base = self._state_of(key)
            else:
                # Judge against the newest version seen; the row is still the earlier base.
                view, work.base = earlier.extra["view"], earlier.base
            work.verdict = guard.judge(view, event)
            if work.verdict is Verdict.STALE:
                continue
            if earlier is not None:
                # A newer version in the same batch supersedes it: never fetched or written.
                earlier.verdict = Verdict.STALE
            work.extra["view"] = ListingState(event.version, False)
            latest[key] = work
        await asyncio.gather(*(self._load_image(w) for w in batch if w.verdict is Verdict.EMBED))
        for key, work in latest.items():
            if work.verdict is Verdict.STALE:
                continue
            assert work.event is not None
            if work.dead_letter is not None:
                state = guard.after_dead_letter(work.base, work.event)
            else:
                state = guard.after_write(work.event, work.image_sha256)
            self._overlay[key] = (work.record.partition, state)
        return batch

    async def _load_image(self, work: Work) -> None:
        assert work.event is not None and work.event.cover_url is not None
        started = time.perf_counter()
        try:
            image = await self.fetcher.fetch(work.event.cover_url)
        except FetchError as exc:
            self._dead_letter(work, exc, DeadLetterStage.FETCH)
            return
        finally:
            metrics.STAGE_DURATION.labels(stage="fetch").observe(time.perf_counter() - started)
        work.image_sha256 = image.sha256
        if guard.is_unchanged(work.base, work.event, image.sha256):
            work.unchanged = True
            return
        cached = self.cache.get(image.sha256)
        if cached is not None:
            work.tensor = cached
            return
        started = time.perf_counter()
        try:
            work.tensor = await self.runner.run(
                preprocess_image,
                image.data,
                self.encoder.image_spec,
                max_pixels=self.settings.image_max_pixels,
                max_bytes=self.settings.fetch_max_bytes,
            )
        except ImageError as exc:
            self._dead_letter(work, exc, DeadLetterStage.DECODE_IMAGE)
            return
        finally:
            metrics.STAGE_DURATION.labels(stage="decode").observe(time.perf_counter() - started)
        self.cache.put(image.sha256, work.tensor)

    # -- stage 2: encode ----------------------------------------------------------------------

    async def encode(self, batch: list[Work]) -> None:
        """Run the towers and fusion on every work item that needs it, in one call."""
        todo = [w for w in batch if w.needs_encoding]
        if not todo:
            return
        images = np.stack([w.tensor for w in todo])  # type: ignore[misc]
        titles = [w.event.title or "" for w in todo]  # type: ignore[union-attr]
        started = time.perf_counter()
        try:
            result = await self.runner.run(self.encoder.encode, images, titles)
        except EncoderError as exc:
            for work in todo:
                self._dead_letter(work, exc, DeadLetterStage.ENCODE)
            return
        metrics.STAGE_DURATION.labels(stage="encode").observe(time.perf_counter() - started)
        for i, work in enumerate(todo):
            work.embedding = result.embeddings[i]
            work.mismatch = float(result.mismatch[i])
            work.tensor = None

    # -- stage 3: dead letters, Milvus, state, embedded events -----------------------------------

    async def write(self, batch: list[Work]) -> None:
        """Make every side effect of the batch durable, then mark its offsets finished."""
        for work in batch:
            # Re-judge against the durable state, which only this stage writes, in order:
            # after a rebalance, replayed events were judged before newer in-flight ones
            # were written, and must not overwrite them.
            event = work.event
            if event is None or work.dead_letter is not None or work.verdict is Verdict.STALE:
                continue
            durable = ListingState.from_json(self.states.get(event.listing_id.encode()))
            if durable is not None and durable.version > event.version:
                work.verdict = Verdict.STALE
        deliveries = []
        for work in batch:
            if work.dead_letter is not None:
                record = work.record
                headers = dead_letter_headers(list(record.headers), work.dead_letter)
                deliveries.append(
                    await self.sender.send(
                        self.settings.topic_dlq, record.key, record.value, headers
                    )
                )
        if deliveries:
            await asyncio.gather(*deliveries)
        await self._fill_unchanged(batch)
        now = datetime.now(UTC)
        now_ms = int(now.timestamp() * 1000)
        mutations = [m for w in batch if (m := self._mutation(w, now_ms)) is not None]
        if mutations:
            await self.sink.write(mutations)
        for work in batch:
            await self._account(work, now)
        for work in batch:
            self.ledger.finish(work.record.topic, work.record.partition, work.record.offset)
        self.finished += len(batch)
        metrics.IN_FLIGHT.dec(len(batch))

    async def _fill_unchanged(self, batch: list[Work]) -> None:
        unchanged = [w for w in batch if w.unchanged and w.dead_letter is None]
        if not unchanged:
            return
        rows = await self.sink.fetch_rows([w.event.listing_id for w in unchanged])  # type: ignore[union-attr]
        missing = []
        for work in unchanged:
            row = rows.get(work.event.listing_id)  # type: ignore[union-attr]
            if row is None:
                missing.append(work)
            else:
                work.embedding = np.asarray(row["embedding"], dtype=np.float32)
                work.mismatch = float(row["mismatch_score"])
        if missing:
            # The row vanished (another writer, a wiped collection): embed it again.
            for work in missing:
                work.unchanged = False
                await self._load_image(work)
            await self.encode(missing)

    def _mutation(self, work: Work, now_ms: int) -> Mutation | None:
        event = work.event
        if event is None or work.dead_letter is not None or work.verdict is Verdict.STALE:
            return None
        if work.verdict is Verdict.DELETE:
            return Mutation(event.listing_id, event.version, None)
        if work.embedding is None:
            return None
        assert event.price is not None
        row = {
            "listing_id": event.listing_id,
            "embedding": work.embedding.tolist(),
            "mismatch_score": float(work.mismatch or 0.0),
            "category": event.category or "",
            "price": float(event.price.amount),
            "currency": event.price.currency,
            "seller_id": event.seller_id or "",
            "version": event.version,
            "model_version": self.model_version,
            "occurred_at_ms": int(event.occurred_at.timestamp() * 1000),
            "updated_at_ms": now_ms,
        }
        return Mutation(event.listing_id, event.version, row)

    async def _account(self, work: Work, now: datetime) -> None:
        event = work.event
        if work.dead_letter is not None:
            metrics.EVENTS.labels(outcome="dead_lettered", reason=work.dead_letter.reason).inc()
        elif event is not None and work.verdict is Verdict.STALE:
            metrics.EVENTS.labels(outcome="skipped_stale", reason="").inc()
            return
        if event is None or work.verdict is Verdict.STALE:
            return
        key = event.listing_id.encode()
        if work.dead_letter is not None:
            state = guard.after_dead_letter(work.base, event)
        elif work.verdict is Verdict.EMBED and work.embedding is None:
            return
        else:
            state = guard.after_write(event, work.image_sha256)
        self.states[key] = state.to_json()
        pending = self._overlay.get(key)
        if pending is not None and pending[1].version <= state.version:
            del self._overlay[key]
        if work.dead_letter is not None:
            return
        if work.verdict is Verdict.DELETE:
            outcome = Outcome.DELETED
        else:
            outcome = Outcome.UNCHANGED if work.unchanged else Outcome.EMBEDDED
        fresh = freshness_seconds(event.occurred_at, now)
        metrics.EVENTS.labels(outcome=outcome.value, reason="").inc()
        metrics.FRESHNESS.labels(outcome=outcome.value).observe(fresh)
        if work.mismatch is not None:
            metrics.MISMATCH.labels(model_version=self.model_version).observe(work.mismatch)
        embedded = EmbeddedEvent(
            event_id=event.event_id,
            listing_id=event.listing_id,
            version=event.version,
            outcome=outcome,
            model_version=self.model_version,
            mismatch_score=None if outcome is Outcome.DELETED else work.mismatch,
            occurred_at=event.occurred_at,
            embedded_at=now,
            freshness_seconds=fresh,
        )
        await self.sender.send(self.settings.topic_embedded, key, encode(embedded), [])


__all__ = ["EmbedderError", "Pipeline"]
