"""The rollout job: fills the candidate collection from the catalogue's state topic.

It reads the state from the start (or where its consumer group committed), in batches:

1. per listing the batch's newest record; tombstones become deletes;
2. the candidate's rows of those listings are read: a listing whose row already has that
   version (or a newer one) is done — never fetched or encoded again (after a SIGKILL, a
   restart skips everything that was written, committed or not);
3. covers come from the disk cache by sha256 or are fetched and checked; decoded in threads;
4. one encoder call for the batch; rows upserted and deletes applied (retried until Milvus
   answers);
5. the batch's offsets are committed: the position survives a restart.

Stages 1-3 of the next batches run while the current one is encoded and written. The job is
the candidate's only writer while the rollout lasts, so a row never goes back in version. The
part of the state that existed when the rollout started is the bulk; after it the job keeps
following the state (the delta) until stopped, or (``until_caught_up``) exits at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from encoders.errors import EncoderError, ImageError
from encoders.preprocess import preprocess_image
from encoders.process import open_encoder
from encoders.runtime import BatchEncoder
from schemas import (
    ROLLOUT_KEY,
    CatalogueEntry,
    ContractError,
    RolloutPhase,
    RolloutRecord,
    decode_catalogue_entry,
    decode_rollout_record,
)
from streams.errors import FetchError
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.rollout import metrics, plan
from streams.rollout.covers import CoverStore
from streams.rollout.plan import StateRecord
from streams.rollout.settings import RolloutSettings
from streams.rollout.state import StateTail, listing_versions
from vitrine.control import ControlError, ControlReader
from vitrine.vectorstore import IMAGE_VECTOR_FIELD, connect, upsert_rows, vector_dims

log = logging.getLogger(__name__)


def group_id(settings: RolloutSettings, rollout: RolloutRecord) -> str:
    """The consumer group whose committed offsets are the job's position: one per rollout, so
    a new rollout into a recreated candidate starts from the beginning of the state."""
    started = int(rollout.started_at.timestamp())
    return f"{settings.app_id}-rollout-{rollout.candidate_collection}-{started}"


@dataclass
class _Item:
    entry: CatalogueEntry
    tensor: np.ndarray | None = None


@dataclass
class _Batch:
    records: list[StateRecord]
    items: list[_Item] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


@dataclass
class JobSummary:
    """What one run of the job did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    records: int = 0
    seconds: float = 0.0
    bulk_done: bool = False
    # When the first batch was durable (seconds into the run) and the listings it wrote: what
    # came before is start-up (model load, group join, the first covers), not throughput.
    first_write_s: float | None = None
    first_write_encoded: int = 0

    @property
    def encoded(self) -> int:
        """Listings encoded and written by this run."""
        return self.outcomes["written"]

    @property
    def steady_rate(self) -> float | None:
        """Listings written per second after the first batch (None before a second one)."""
        if self.first_write_s is None:
            return None
        span, done = self.seconds - self.first_write_s, self.encoded - self.first_write_encoded
        return done / span if span > 0 and done > 0 else None

    def to_json(self) -> str:
        """One line for scripts and tests."""
        return json.dumps(
            {
                "records": self.records,
                "encoded": self.encoded,
                "outcomes": dict(self.outcomes),
                "seconds": round(self.seconds, 3),
                "bulk_done": self.bulk_done,
                "startup_seconds": (
                    round(self.first_write_s, 3) if self.first_write_s is not None else None
                ),
            },
            sort_keys=True,
        )


class RolloutJob:
    """Runs the bulk and delta of one rollout into its candidate collection, until stopped or
    the rollout is finished."""

    control_every_s = 1.0

    def __init__(
        self,
        settings: RolloutSettings,
        rollout: RolloutRecord,
        encoder: BatchEncoder | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rollout = rollout
        self.encoder = encoder
        self.summary = JobSummary()
        self._report = report or _report_line
        self._stop = asyncio.Event()
        self._stores_covers = True
        self._started = time.monotonic()

    def request_stop(self) -> None:
        """Return soon: batches not yet committed are dropped (a restart re-reads them and
        skips what already reached the candidate, as after a crash)."""
        self._stop.set()

    async def run(self, *, until_caught_up: bool = False, from_start: bool = False) -> JobSummary:
        """Process the state until stopped (or, ``until_caught_up``, its end as it is when the
        job has processed everything before it)."""
        settings, rollout = self.settings, self.rollout
        started = self._started = time.monotonic()
        # Decoding, the towers and Milvus each get their own threads: the towers of one batch
        # run while the covers of the next are decoded, never queued behind them.
        runner = BlockingRunner(settings.encode_threads, name="vitrine-rollout-decode")
        towers = BlockingRunner(1, name="vitrine-rollout-encode")
        milvus = BlockingRunner(2, name="vitrine-rollout-milvus")
        kafka = BlockingRunner(1, name="vitrine-rollout-kafka")  # the consumer is not threadsafe
        owned = self.encoder is None
        if self.encoder is None:
            self.encoder = await towers.run(
                functools.partial(
                    open_encoder,
                    rollout.model_dir,
                    own_process=settings.encode_process,
                    # Every core unless set: the bulk is a batch job (the live embedder's
                    # default of half the cores leaves room for an event loop it lacks).
                    intra_op_threads=settings.ort_intra_threads,
                    capacity=min(settings.rollout_batch_size, 64),
                )
            )
        encoder = self.encoder
        if encoder.manifest.model_version != rollout.candidate_model_version:
            if owned:
                encoder.close()
            raise ValueError(
                f"{rollout.model_dir} holds model {encoder.manifest.model_version}, the rollout "
                f"is for {rollout.candidate_model_version}"
            )
        metrics.INFO.labels(rollout.candidate_collection, rollout.candidate_model_version).set(1)
        client = connect(settings)
        described = client.describe_collection(rollout.candidate_collection)
        self._stores_covers = IMAGE_VECTOR_FIELD in vector_dims(described)
        tail = await kafka.run(StateTail, settings, group_id(settings, rollout), from_start)
        fetcher = ImageFetcher(settings)
        directory = settings.rollout_home / "covers" if settings.rollout_cover_cache else None
        covers = CoverStore(fetcher, directory)
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(settings.rollout_depth)
        self._bulk_ends = list(rollout.state_end_offsets)
        self._bulk_total = plan.remaining(self._bulk_ends, {})
        self._rate = 0.0
        self._ends: list[int] = list(self._bulk_ends)
        self._ends_at = 0.0
        self._last_report = 0.0
        self._last_done = (time.monotonic(), plan.remaining(self._bulk_ends, tail.positions))
        try:
            producer = asyncio.create_task(
                self._prepare_loop(
                    tail, kafka, runner, milvus, client, covers, queue, until_caught_up
                )
            )
            writer = asyncio.create_task(
                self._write_loop(tail, kafka, towers, milvus, client, queue)
            )
            stopper = asyncio.create_task(self._stop.wait())
            watcher = asyncio.create_task(self._watch_control())
            done, _ = await asyncio.wait(
                {writer, stopper, producer}, return_when=asyncio.FIRST_COMPLETED
            )
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if producer in done and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
            if producer in done and writer not in done:
                await asyncio.wait({writer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (producer, writer, stopper):
                task.cancel()
            await asyncio.gather(producer, writer, stopper, return_exceptions=True)
            if writer.done() and not writer.cancelled() and writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        finally:
            await fetcher.close()
            await kafka.run(tail.close)
            for pool in (kafka, runner, towers, milvus):
                pool.close()
            if owned:
                encoder.close()
            with contextlib.suppress(Exception):
                client.close()
        self.summary.seconds = time.monotonic() - started
        self._progress(tail, force=True)
        return self.summary

    async def _watch_control(self) -> None:
        """Stop once the rollout is finished (or replaced): after a finish the embedders write
        the candidate themselves, and ``finish`` waited for this job to reach the state's end."""
        reader = ControlReader(self.settings)
        kafka = BlockingRunner(
            1, name="vitrine-rollout-control"
        )  # close after a poll, never during
        try:
            while not self._stop.is_set():
                try:
                    records = await kafka.run(reader.poll)
                except ControlError as exc:
                    log.warning("control topic not readable: %s", exc)
                    records = {}
                if ROLLOUT_KEY in records and _over(self.rollout, records[ROLLOUT_KEY]):
                    model = self.rollout.candidate_model_version
                    log.info("the rollout of %s is finished: the job exits", model)
                    self.request_stop()
                    return
                await asyncio.sleep(self.control_every_s)
        finally:
            await asyncio.shield(kafka.run(reader.close))
            kafka.close()

    # -- stages 1-3: read, check, fetch, decode -------------------------------------------------

    async def _prepare_loop(
        self,
        tail: StateTail,
        kafka: BlockingRunner,
        runner: BlockingRunner,
        milvus: BlockingRunner,
        client: Any,
        covers: CoverStore,
        queue: asyncio.Queue[_Batch | None],
        until_caught_up: bool,
    ) -> None:
        size = self.settings.rollout_batch_size
        while not self._stop.is_set():
            records = await kafka.run(tail.read, size, 0.5)
            if time.monotonic() - self._ends_at >= self.settings.rollout_progress_every_s:
                self._ends = await kafka.run(tail.ends)
                self._ends_at = time.monotonic()
            if not records:
                if until_caught_up and await self._caught_up(tail, kafka, queue):
                    await queue.put(None)
                    return
                self._progress(tail)
                continue
            started = time.perf_counter()
            batch = await self._prepare(records, runner, milvus, client, covers)
            metrics.STAGE_DURATION.labels(stage="prepare").observe(time.perf_counter() - started)
            await queue.put(batch)

    async def _caught_up(
        self, tail: StateTail, kafka: BlockingRunner, queue: asyncio.Queue[_Batch | None]
    ) -> bool:
        """Nothing read, nothing queued: is the job's read position at the end of the state?"""
        if not queue.empty():
            return False
        ends = await kafka.run(tail.ends)
        read_to = await kafka.run(tail.read_positions)
        return plan.remaining(ends, read_to) == 0

    async def _prepare(
        self,
        records: list[StateRecord],
        runner: BlockingRunner,
        milvus: BlockingRunner,
        client: Any,
        covers: CoverStore,
    ) -> _Batch:
        batch = _Batch(records)
        newest = plan.newest_per_listing(records)
        self.summary.outcomes["superseded"] += len(records) - len(newest)
        metrics.RECORDS.labels(outcome="superseded").inc(len(records) - len(newest))
        entries: dict[str, CatalogueEntry] = {}
        for record in newest:
            if record.value is None:
                batch.deletes.append(record.key.decode())
                continue
            try:
                entry = decode_catalogue_entry(record.value)
            except ContractError as exc:
                log.warning(
                    "state record %d@%d unreadable: %s", record.partition, record.offset, exc
                )
                self._count("invalid")
                continue
            entries[entry.listing_id] = entry
        started = time.perf_counter()
        stored = await self._milvus(
            milvus,
            lambda: listing_versions(client, self.rollout.candidate_collection, list(entries)),
        )
        metrics.STAGE_DURATION.labels(stage="check").observe(time.perf_counter() - started)
        todo = plan.to_write({lid: e.version for lid, e in entries.items()}, stored)
        self._count("already_done", len(entries) - len(todo))
        items = [_Item(entries[lid]) for lid in todo]
        await asyncio.gather(*(self._load(item, runner, covers) for item in items))
        batch.items = [item for item in items if item.tensor is not None]
        return batch

    async def _load(self, item: _Item, runner: BlockingRunner, covers: CoverStore) -> None:
        assert self.encoder is not None
        try:
            cover = await covers.get(item.entry)
            item.tensor = await runner.run(
                preprocess_image,
                cover.data,
                self.encoder.image_spec,
                max_pixels=self.settings.image_max_pixels,
                max_bytes=self.settings.fetch_max_bytes,
            )
        except (FetchError, ImageError) as exc:
            log.warning("cover of %s not usable (%s): not re-embedded", item.entry.listing_id, exc)
            self._count("cover_failed")

    # -- stages 4-5: encode, write, commit ----------------------------------------------------

    async def _write_loop(
        self,
        tail: StateTail,
        kafka: BlockingRunner,
        towers: BlockingRunner,
        milvus: BlockingRunner,
        client: Any,
        queue: asyncio.Queue[_Batch | None],
    ) -> None:
        # The next batch's encode call is queued on the towers' thread while this one's rows
        # are written and committed: the towers start it the moment they finish.
        calls: asyncio.Queue[tuple[_Batch, asyncio.Task[list[dict[str, Any]]]] | None] = (
            asyncio.Queue()
        )
        slots = asyncio.Semaphore(2)

        async def encode_ahead() -> None:
            while True:
                batch = await queue.get()
                if batch is None:
                    calls.put_nowait(None)
                    return
                await slots.acquire()
                calls.put_nowait((batch, asyncio.create_task(self._encode(batch, towers))))

        ahead = asyncio.create_task(encode_ahead())
        try:
            await self._write_encoded(tail, kafka, milvus, client, calls, slots)
        finally:
            ahead.cancel()
            while not calls.empty():
                call = calls.get_nowait()
                if call is not None:
                    call[1].cancel()

    async def _write_encoded(
        self,
        tail: StateTail,
        kafka: BlockingRunner,
        milvus: BlockingRunner,
        client: Any,
        calls: asyncio.Queue[tuple[_Batch, asyncio.Task[list[dict[str, Any]]]] | None],
        slots: asyncio.Semaphore,
    ) -> None:
        while True:
            call = await calls.get()
            if call is None:
                return
            batch, encoding = call
            rows = await encoding
            slots.release()
            started = time.perf_counter()
            name, deletes = self.rollout.candidate_collection, batch.deletes
            if deletes:
                await self._milvus(milvus, functools.partial(client.delete, name, ids=deletes))
            if rows:
                await self._milvus(milvus, functools.partial(upsert_rows, client, name, rows))
            metrics.STAGE_DURATION.labels(stage="write").observe(time.perf_counter() - started)
            self._count("deleted", len(batch.deletes))
            self._count("written", len(rows))
            if self.summary.first_write_s is None and rows:
                self.summary.first_write_s = time.monotonic() - self._started
                self.summary.first_write_encoded = self.summary.encoded
            await kafka.run(tail.commit, plan.committable(batch.records))
            self.summary.records += len(batch.records)
            metrics.progressed()
            self._progress(tail)

    async def _encode(self, batch: _Batch, runner: BlockingRunner) -> list[dict[str, Any]]:
        assert self.encoder is not None
        if not batch.items:
            return []
        started = time.perf_counter()
        images = np.stack([item.tensor for item in batch.items])  # type: ignore[misc]
        titles = [item.entry.title for item in batch.items]
        try:
            result = await runner.run(self.encoder.encode, images, titles)
        except EncoderError as exc:
            # The live model accepted these; a new model that refuses a batch is a bug to fix
            # before cutover: stop rather than leave silent holes.
            raise RuntimeError(f"the new model refused a batch: {exc}") from exc
        metrics.STAGE_DURATION.labels(stage="encode").observe(time.perf_counter() - started)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        rows = []
        for i, item in enumerate(batch.items):
            entry = item.entry
            row: dict[str, Any] = {
                "listing_id": entry.listing_id,
                "embedding": result.embeddings[i].tolist(),
                "mismatch_score": float(result.mismatch[i]),
                "category": entry.category,
                "price": float(entry.price.amount),
                "currency": entry.price.currency,
                "seller_id": entry.seller_id,
                "version": entry.version,
                "model_version": self.rollout.candidate_model_version,
                "occurred_at_ms": int(entry.occurred_at.timestamp() * 1000),
                "updated_at_ms": now_ms,
            }
            if self._stores_covers and result.image_vectors is not None:
                row[IMAGE_VECTOR_FIELD] = result.image_vectors[i].tolist()
            rows.append(row)
            item.tensor = None
        return rows

    async def _milvus(self, runner: BlockingRunner, call: Callable[[], Any]) -> Any:
        """Run a Milvus call, retrying with backoff while Milvus fails."""
        delay = self.settings.milvus_backoff_s
        while True:
            try:
                return await runner.run(call)
            except Exception as exc:  # pymilvus raises MilvusException, grpc and OS errors
                if self._stop.is_set():
                    raise
                log.warning("Milvus call failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.milvus_backoff_max_s)

    # -- progress -------------------------------------------------------------------------------

    def _count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.summary.outcomes[outcome] += n
            metrics.RECORDS.labels(outcome=outcome).inc(n)

    def _progress(self, tail: StateTail, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.settings.rollout_progress_every_s:
            return
        self._last_report = now
        left = plan.remaining(self._bulk_ends, tail.positions)
        done = self._bulk_total - left
        then, left_then = self._last_done
        if now > then and left_then > left:
            rate = (left_then - left) / (now - then)
            self._rate = rate if self._rate == 0 else 0.5 * self._rate + 0.5 * rate
        self._last_done = (now, left)
        behind = plan.remaining(self._ends, tail.positions)
        metrics.BULK_REMAINING.set(left)
        metrics.BEHIND.set(behind)
        if left == 0:
            if not self.summary.bulk_done:
                log.info("bulk complete: %d records", self._bulk_total)
            self.summary.bulk_done = True
        self._report(plan.progress_line(done, self._bulk_total, self._rate, behind))
        self._write_progress(done, left)

    def _write_progress(self, done: int, left: int) -> None:
        path = self.settings.rollout_home / f"{self.rollout.candidate_collection}.progress.json"
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "candidate": self.rollout.candidate_collection,
                "bulk_done": done,
                "bulk_total": self._bulk_total,
                "rate_records_per_s": round(self._rate, 3),
                "eta_s": plan.eta_seconds(left, self._rate),
                "updated_at": datetime.now(UTC).isoformat(),
            }
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload))
            tmp.replace(path)


def _over(rollout: RolloutRecord, value: bytes | None) -> bool:
    """True when the rollout record ``value`` says ``rollout`` is finished or replaced."""
    if value is None:
        return True
    try:
        current = decode_rollout_record(value)
    except ContractError:
        return False  # unreadable: keep feeding the candidate
    return (
        current.phase is RolloutPhase.FINISHED
        or current.candidate_collection != rollout.candidate_collection
        or current.started_at != rollout.started_at
    )


def _report_line(line: str) -> None:
    """A progress bar on a terminal, a log line otherwise."""
    if sys.stderr.isatty():
        print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
    else:
        log.info("%s", line)
