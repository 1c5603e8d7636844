"""The embedder's stages, independent of faust: prepare -> encode -> sink, overlapped.

``prepare`` decodes, judges versions, fetches and preprocesses images for batch k+1 while
``encode`` runs the towers on batch k and ``sink`` (:class:`~streams.checkpoint.Checkpoint`)
makes batch k-1 durable; the queues between them are bounded, so a slow or failing stage
(Milvus down) pauses everything upstream, down to the Kafka consumer. Batches leave ``sink``
in the order they were formed, and only ``sink`` marks offsets finished in the
:class:`~streams.ledger.OffsetLedger`.

Which version a listing's row ends at does not depend on batching or arrival order: the row
holds the newest version that could be written (valid, image fetched and decoded, encoded) and
is not older than a delete. A dead-lettered version does not count as seen, so an older valid
version that arrives after it is still written, and within a batch the newest version of a
listing that fails falls back to the next newest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from encoders.errors import EncoderError, ImageError
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from schemas import ContractError, DeadLetter, DeadLetterStage, ListingEvent, decode_listing_event
from schemas.errors import Reason
from streams import guard, metrics
from streams.cache import ImageCache
from streams.checkpoint import Checkpoint, Sender
from streams.errors import EmbedderError, FetchError
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.guard import ListingState, Verdict
from streams.ledger import OffsetLedger
from streams.ownership import EveryPartition, Ownership
from streams.records import SourceRecord, Work
from streams.settings import EmbedderSettings
from streams.sink import VectorSink
from streams.state import PendingStates, StateStore
from vitrine.errors import VitrineError

log = logging.getLogger(__name__)

_DECODE_REASONS = {Reason.MALFORMED_JSON, Reason.PAYLOAD_TOO_LARGE, Reason.NOT_AN_OBJECT}


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
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model_version = encoder.manifest.model_version
        self.fetcher = fetcher
        self.sink = sink
        self.states = states
        self.ledger = ledger
        self.runner = runner
        self.cache = ImageCache(settings.image_cache_entries)
        self.on_batch_done = on_batch_done
        self.pending = PendingStates()
        # Tools and tests without a consumer group hold every partition.
        self.ownership = ownership = ownership or EveryPartition()
        self.checkpoint = Checkpoint(
            settings,
            self.model_version,
            sink,
            sender,
            states,
            self.pending,
            ledger,
            ownership,
            reembed=self._reembed,
        )
        self.submitted = 0
        depth = settings.pipeline_depth
        self._intake: asyncio.Queue[SourceRecord] = asyncio.Queue(settings.batch_size * 2)
        self._prepared: asyncio.Queue[list[Work]] = asyncio.Queue(depth)
        self._encoded: asyncio.Queue[list[Work]] = asyncio.Queue(depth)

    @property
    def finished(self) -> int:
        """Events whose side effects are durable and offsets finished."""
        return self.checkpoint.finished

    @property
    def idle(self) -> bool:
        """Nothing submitted is waiting or being worked on."""
        return self.submitted == self.checkpoint.settled

    # -- feeding -----------------------------------------------------------------------------

    async def submit(self, record: SourceRecord) -> int | None:
        """Accept one record; waits while the pipeline is full (backpressure).

        Returns the offset to seek the record's partition back to when the ledger found
        records that were fetched but never delivered (see :mod:`streams.ledger`).
        """
        hole = self.ledger.register(record.topic, record.partition, record.offset)
        metrics.IN_FLIGHT.inc()
        self.submitted += 1
        await self._intake.put(record)
        return hole

    async def fence(self, partitions: set[tuple[str, int]]) -> None:
        """Revocation, step 1: returns once nothing more will be written for ``partitions``
        (the batch being written finished; their other in-flight work will be abandoned)."""
        await self.checkpoint.fence(partitions)

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Revocation, step 2 (after the last commit): drop pending states and ledger rows."""
        self.pending.forget({p for _, p in partitions})
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
            metrics.BATCH_SIZE.observe(len(records))
            await self._prepared.put(await self.prepare(records))

    async def _encode_loop(self) -> None:
        while True:
            batch = await self._prepared.get()
            await self.encode(batch)
            metrics.beat()  # progress
            await self._encoded.put(batch)

    async def _sink_loop(self) -> None:
        while True:
            batch = await self._encoded.get()
            await self.checkpoint.commit(batch)
            metrics.beat()  # progress
            if self.on_batch_done is not None:
                await self.on_batch_done()

    # -- stage 1: decode, judge, fetch, preprocess ----------------------------------------------

    def _state_of(self, key: bytes) -> ListingState | None:
        pending = self.pending.get(key)
        if pending is not None:
            return pending
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

    def _decode(self, work: Work) -> ListingEvent | None:
        """The record's event, or None after dead-lettering it."""
        try:
            event = decode_listing_event(work.record.value)
        except ContractError as exc:
            decoding = exc.reason in _DECODE_REASONS
            stage = DeadLetterStage.DECODE if decoding else DeadLetterStage.VALIDATE
            self._dead_letter(work, exc, stage)
            return None
        if work.record.key is not None and work.record.key != event.listing_id.encode():
            error = ContractError("record key differs from listing_id", reason=Reason.INVALID_VALUE)
            error.field = "key"
            self._dead_letter(work, error, DeadLetterStage.VALIDATE)
            return None
        return event

    async def prepare(self, records: list[SourceRecord]) -> list[Work]:
        """Decode, judge and fetch one batch; every record comes back as a :class:`Work`."""
        batch = [Work(record) for record in records]
        candidates: dict[bytes, list[Work]] = {}
        for work in batch:
            event = work.event = self._decode(work)
            if event is None:
                continue
            key = event.listing_id.encode()
            work.base = self._state_of(key)
            work.verdict = guard.judge(work.base, event)
            if work.verdict is not Verdict.STALE:
                candidates.setdefault(key, []).append(work)
        winners = await asyncio.gather(*(self._choose(works) for works in candidates.values()))
        for key, winner in zip(candidates, winners, strict=True):
            if winner is None or winner.verdict is Verdict.ANNOUNCE:
                continue
            record = winner.record
            if not self.ownership.holds((record.topic, record.partition), record.epoch):
                # Revoked while its image was fetched: this work will be abandoned, and a
                # pending state left by it would make the next owner's replay look stale.
                continue
            assert winner.event is not None
            state = guard.after_write(winner.event, winner.image_sha256)
            self.pending.decide(key, record.partition, state, winner)
        return batch

    async def _choose(self, works: list[Work]) -> Work | None:
        """The newest of one listing's versions in the batch that loads; the rest are stale.

        Versions are tried newest first; one whose image fails is dead-lettered and the next
        newest is tried, so the batch ends where one-event batches would have.
        """
        winner = None
        for work in sorted(works, key=lambda w: w.event.version, reverse=True):  # type: ignore[union-attr]
            if winner is not None:
                work.verdict = Verdict.STALE  # superseded: never fetched or written
                continue
            if work.verdict is Verdict.EMBED:
                await self._load_image(work)
            if work.dead_letter is None:
                winner = work
        return winner

    async def _load_image(self, work: Work, reuse_row: bool = True) -> None:
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
        if reuse_row and guard.is_unchanged(work.base, work.event, image.sha256):
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
        await self._encode_isolating(todo)

    async def _encode_isolating(self, todo: list[Work]) -> None:
        """Encode ``todo`` in one call; when the model refuses it, bisect until the events it
        refuses are alone, and dead-letter only those."""
        images = np.stack([w.tensor for w in todo])  # type: ignore[misc]
        titles = [w.event.title or "" for w in todo]  # type: ignore[union-attr]
        started = time.perf_counter()
        try:
            result = await self.runner.run(self.encoder.encode, images, titles)
        except EncoderError as exc:
            if len(todo) > 1:
                half = len(todo) // 2
                await self._encode_isolating(todo[:half])
                await self._encode_isolating(todo[half:])
                return
            work = todo[0]
            self._dead_letter(work, exc, DeadLetterStage.ENCODE)
            self.pending.release(work.event.listing_id.encode(), work)  # type: ignore[union-attr]
            return
        metrics.STAGE_DURATION.labels(stage="encode").observe(time.perf_counter() - started)
        for i, work in enumerate(todo):
            work.embedding = result.embeddings[i]
            work.mismatch = float(result.mismatch[i])
            if result.image_vectors is not None:
                work.image_vector = result.image_vectors[i]
            work.tensor = None

    async def _reembed(self, works: list[Work]) -> None:
        """Fetch and encode again rows that were to be reused but vanished from Milvus."""
        await asyncio.gather(*(self._load_image(w, reuse_row=False) for w in works))
        await self.encode(works)


__all__ = ["EmbedderError", "Pipeline"]
