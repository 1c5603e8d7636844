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
from pathlib import Path

import numpy as np

from encoders.errors import EncoderError, ImageError
from encoders.preprocess import preprocess_image
from encoders.process import open_encoder
from encoders.runtime import BatchEncoder
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
from streams.records import (
    Announce,
    Decoded,
    Delete,
    Encoded,
    Fetched,
    Prepared,
    Ready,
    Rejected,
    Skipped,
    SourceRecord,
    Unchanged,
    Vectors,
)
from streams.settings import EmbedderSettings
from streams.sink import VectorSink
from streams.state import PendingStates, StateStore
from vitrine.errors import VitrineError

log = logging.getLogger(__name__)

#: At most this many batches' worth of events go to the sink in one write.
SINK_MERGE_BATCHES = 4

_DECODE_REASONS = {Reason.MALFORMED_JSON, Reason.PAYLOAD_TOO_LARGE, Reason.NOT_AN_OBJECT}


def open_towers(settings: EmbedderSettings, model_dir: Path) -> BatchEncoder:
    """The embedder's model (blocking): in a child process unless ``encode_process`` is off,
    ``ort_threads`` intra-op threads, a shared block for one full batch."""
    return open_encoder(
        model_dir,
        own_process=settings.encode_process,
        intra_op_threads=settings.ort_threads,
        capacity=settings.batch_size,
    )


class Pipeline:
    """Micro-batching embedder pipeline; feed it with :meth:`submit`, run it with :meth:`run`."""

    def __init__(
        self,
        settings: EmbedderSettings,
        encoder: BatchEncoder,
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
        self._prepared: asyncio.Queue[list[Prepared]] = asyncio.Queue(depth)
        self._encoded: asyncio.Queue[list[Ready]] = asyncio.Queue(depth)
        # A model hand-over (streams/follow.py) closes the gate at a batch boundary.
        self._forming = asyncio.Event()
        self._forming.set()
        self._batches_formed = 0
        self._batches_done = 0

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

    # -- model hand-over (streams/follow.py) ---------------------------------------------------

    async def hold(self) -> None:
        """Stop forming batches; returns once every batch formed went through the checkpoint
        (durable, announced, offsets finished) or was abandoned."""
        self._forming.clear()
        while self._batches_done < self._batches_formed:
            await asyncio.sleep(0.02)

    def use_model(self, encoder: BatchEncoder, sink: VectorSink) -> None:
        """Encode with ``encoder`` and write into ``sink`` from the next batch on (between
        :meth:`hold` and :meth:`resume`)."""
        assert not self._forming.is_set() and self._batches_done == self._batches_formed
        self.encoder = encoder
        self.model_version = encoder.manifest.model_version
        self.sink = sink
        self.cache = ImageCache(self.settings.image_cache_entries)  # tensors of the old spec
        self.checkpoint.model_version = self.model_version
        self.checkpoint.sink = sink

    def resume(self) -> None:
        """Form batches again."""
        self._forming.set()

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
            if not self._forming.is_set():
                await self._forming.wait()  # a hand-over: this batch waits for the new model
            self._batches_formed += 1
            metrics.BATCH_SIZE.observe(len(records))
            await self._prepared.put(await self.prepare(records))

    async def _encode_loop(self) -> None:
        # Two model calls in flight: the next is queued on the model thread while the current
        # one runs, so the towers start it the moment they finish, not when the event loop
        # next gets round to asking (on 2 cores that wait was ~3 ms per event of idle towers).
        calls: asyncio.Queue[tuple[list[list[Prepared]], asyncio.Task[list[Ready]]]] = (
            asyncio.Queue()
        )
        slots = asyncio.Semaphore(2)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deliver_encoded(calls, slots))
            carry: list[Prepared] | None = None
            while True:
                # Batches that queued up while the towers were busy are encoded in one call
                # (up to the batch size): under load, small batches would otherwise each pay
                # the model's per-call cost. They still reach the sink one by one, in order.
                waiting = [carry if carry is not None else await self._prepared.get()]
                await slots.acquire()
                carry, size = None, len(waiting[0])
                while not self._prepared.empty():
                    ready = self._prepared.get_nowait()
                    if size + len(ready) > self.settings.batch_size:
                        carry = ready  # the first of the next call
                        break
                    waiting.append(ready)
                    size += len(ready)
                items = [item for batch in waiting for item in batch]
                calls.put_nowait((waiting, group.create_task(self.encode(items))))

    async def _deliver_encoded(
        self,
        calls: asyncio.Queue[tuple[list[list[Prepared]], asyncio.Task[list[Ready]]]],
        slots: asyncio.Semaphore,
    ) -> None:
        """Hand encoded batches to the sink in the order their calls were made."""
        while True:
            waiting, call = await calls.get()
            encoded = await call
            slots.release()
            metrics.beat()  # progress
            for batch in waiting:
                await self._encoded.put(encoded[: len(batch)])
                encoded = encoded[len(batch) :]

    async def _sink_loop(self) -> None:
        limit = self.settings.batch_size * SINK_MERGE_BATCHES
        while True:
            batch, merged = await self._encoded.get(), 1
            # Batches that queued up while the last write was made go in one write: a slow
            # Milvus call (milvus-lite's upsert and delete grow with the collection, ~0.2 s
            # each at 100k rows) is then paid once per group, not once per batch, and the
            # sink keeps up. The version decision is per listing over the whole group
            # (streams.decide), so rows end as if the batches had been written in order.
            while not self._encoded.empty() and len(batch) < limit:
                batch, merged = batch + self._encoded.get_nowait(), merged + 1
            await self.checkpoint.commit(batch)
            self._batches_done += merged
            metrics.beat()  # progress
            if self.on_batch_done is not None:
                await self.on_batch_done()

    # -- stage 1: decode, judge, fetch, preprocess ----------------------------------------------

    def _state_of(self, key: bytes) -> ListingState | None:
        pending = self.pending.get(key)
        if pending is not None:
            return pending
        return ListingState.from_json(self.states.get(key))

    def _reject(
        self,
        record: SourceRecord,
        error: VitrineError,
        stage: DeadLetterStage,
        event: ListingEvent | None = None,
    ) -> Rejected:
        dead_letter = DeadLetter.from_error(
            error,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=stage,
            model_version=self.model_version,
        )
        return Rejected(record, dead_letter, event)

    def _decode(self, record: SourceRecord) -> Decoded | Rejected:
        """The record's event, or its dead letter."""
        try:
            event = decode_listing_event(record.value)
        except ContractError as exc:
            decoding = exc.reason in _DECODE_REASONS
            stage = DeadLetterStage.DECODE if decoding else DeadLetterStage.VALIDATE
            return self._reject(record, exc, stage)
        if record.key is not None and record.key != event.listing_id.encode():
            error = ContractError("record key differs from listing_id", reason=Reason.INVALID_VALUE)
            error.field = "key"
            return self._reject(record, error, DeadLetterStage.VALIDATE)
        return Decoded(record, event)

    async def prepare(self, records: list[SourceRecord]) -> list[Prepared]:
        """Decode, judge and fetch one batch; one result per record, in the records' order."""
        results: list[Prepared | None] = [None] * len(records)
        candidates: dict[bytes, list[tuple[int, Decoded, Verdict, ListingState | None]]] = {}
        for index, record in enumerate(records):
            decoded = self._decode(record)
            if isinstance(decoded, Rejected):
                results[index] = decoded
                continue
            base = self._state_of(decoded.listing)
            verdict = guard.judge(base, decoded.event)
            if verdict is Verdict.STALE:
                results[index] = Skipped(record, decoded.event)
            else:
                candidates.setdefault(decoded.listing, []).append((index, decoded, verdict, base))
        chosen = await asyncio.gather(*(self._choose(c) for c in candidates.values()))
        for key, (outcomes, winner) in zip(candidates, chosen, strict=True):
            for index, outcome in outcomes.items():
                results[index] = outcome
            if winner is not None:
                self._hold_pending(key, winner)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _hold_pending(self, key: bytes, winner: Delete | Unchanged | Fetched) -> None:
        """Later batches judge this listing against the version ``winner`` will write."""
        record = winner.record
        if not self.ownership.holds((record.topic, record.partition), record.epoch):
            # Revoked while its image was fetched: this work will be abandoned, and a pending
            # state left by it would make the next owner's replay look stale.
            return
        sha = None if isinstance(winner, Delete) else winner.image_sha256
        self.pending.decide(key, record.partition, guard.after_write(winner.event, sha), record)

    async def _choose(
        self, versions: list[tuple[int, Decoded, Verdict, ListingState | None]]
    ) -> tuple[dict[int, Prepared], Delete | Unchanged | Fetched | None]:
        """One listing's versions in the batch: the newest that loads wins, the rest are
        skipped; returns each version's outcome by batch index, and the winner to write.

        Versions are tried newest first; one whose image fails is dead-lettered and the next
        newest is tried, so the batch ends where one-event batches would have.
        """
        outcomes: dict[int, Prepared] = {}
        winner: Prepared | None = None
        for index, decoded, verdict, base in sorted(
            versions, key=lambda v: v[1].event.version, reverse=True
        ):
            record, event = decoded.record, decoded.event
            if winner is not None:
                outcome: Prepared = Skipped(record, event)  # superseded: never fetched
            elif verdict is Verdict.ANNOUNCE:
                outcome = winner = Announce(record, event)
            elif verdict is Verdict.DELETE:
                outcome = winner = Delete(record, event)
            else:
                outcome = await self._load_image(decoded, base)
                if not isinstance(outcome, Rejected):
                    winner = outcome
            outcomes[index] = outcome
        writes = winner if isinstance(winner, Delete | Unchanged | Fetched) else None
        return outcomes, writes

    async def _load_image(
        self, decoded: Decoded, base: ListingState | None, reuse_row: bool = True
    ) -> Fetched | Unchanged | Rejected:
        """Fetch and preprocess the cover; ``Unchanged`` when the live row can be reused."""
        record, event = decoded.record, decoded.event
        assert event.cover_url is not None
        started = time.perf_counter()
        try:
            image = await self.fetcher.fetch(event.cover_url)
        except FetchError as exc:
            return self._reject(record, exc, DeadLetterStage.FETCH, event)
        finally:
            metrics.STAGE_DURATION.labels(stage="fetch").observe(time.perf_counter() - started)
        if reuse_row and guard.is_unchanged(base, event, image.sha256):
            return Unchanged(record, event, image.sha256)
        tensor = self.cache.get(image.sha256)
        if tensor is not None:
            return Fetched(record, event, image.sha256, tensor)
        started = time.perf_counter()
        try:
            tensor = await self.runner.run(
                preprocess_image,
                image.data,
                self.encoder.image_spec,
                max_pixels=self.settings.image_max_pixels,
                max_bytes=self.settings.fetch_max_bytes,
            )
        except ImageError as exc:
            return self._reject(record, exc, DeadLetterStage.DECODE_IMAGE, event)
        finally:
            metrics.STAGE_DURATION.labels(stage="decode").observe(time.perf_counter() - started)
        self.cache.put(image.sha256, tensor)
        return Fetched(record, event, image.sha256, tensor)

    # -- stage 2: encode ----------------------------------------------------------------------

    async def encode(self, batch: list[Prepared]) -> list[Ready]:
        """Run the towers and fusion on every fetched cover of the batch, in one call."""
        todo = [item for item in batch if isinstance(item, Fetched)]
        if not todo:
            return list(batch)  # type: ignore[arg-type]
        done = iter(await self._encode_isolating(todo))
        return [next(done) if isinstance(item, Fetched) else item for item in batch]

    async def _encode_isolating(self, todo: list[Fetched]) -> list[Encoded | Rejected]:
        """Encode ``todo`` in one call; when the model refuses it, bisect until the events it
        refuses are alone, and dead-letter only those."""
        images = np.stack([item.tensor for item in todo])
        titles = [item.event.title or "" for item in todo]
        started = time.perf_counter()
        try:
            result = await self.runner.run_model(self.encoder.encode, images, titles)
        except EncoderError as exc:
            if len(todo) > 1:
                half = len(todo) // 2
                return [
                    *await self._encode_isolating(todo[:half]),
                    *await self._encode_isolating(todo[half:]),
                ]
            item = todo[0]
            self.pending.release(item.listing, item.record)
            return [self._reject(item.record, exc, DeadLetterStage.ENCODE, item.event)]
        metrics.STAGE_DURATION.labels(stage="encode").observe(time.perf_counter() - started)
        shared = result.image_vectors
        return [
            Encoded(
                item.record,
                item.event,
                item.image_sha256,
                Vectors(
                    result.embeddings[i],
                    float(result.mismatch[i]),
                    None if shared is None else shared[i],
                ),
            )
            for i, item in enumerate(todo)
        ]

    async def _reembed(self, rows: list[Unchanged]) -> list[Encoded | Rejected]:
        """Fetch and encode again rows that were to be reused but vanished from Milvus."""
        loaded = await asyncio.gather(
            *(self._load_image(item, None, reuse_row=False) for item in rows)
        )
        fetched = [item for item in loaded if isinstance(item, Fetched)]
        done = iter(await self._encode_isolating(fetched) if fetched else [])
        return [next(done) if isinstance(item, Fetched) else item for item in loaded]  # type: ignore[misc]


__all__ = ["EmbedderError", "Pipeline"]
