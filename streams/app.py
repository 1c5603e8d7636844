"""The faust app of the embedder: topic, version table, intake agent, rebalance hooks, committer.

Offsets (see docs/embedder.md, "Offsets"): the source topic is declared with ``acks=False``, so
faust's own acking and commit bookkeeping never touch it (that is where faust issue #606 lives:
with concurrent agents it may commit past events still in flight). Instead the intake agent
registers every record in an :class:`~streams.ledger.OffsetLedger` as it arrives, the sink stage
(:class:`~streams.checkpoint.Checkpoint`) finishes it once its effects are durable, and
:class:`Embedder` commits only the ledger's lowest unfinished offset per partition, through the
one seam over faust's consumer (:mod:`streams.kafka`); a refused commit is retried, never
recorded as done. A revocation fences the partitions and waits for the batch being written
before the rebalance completes (:mod:`streams.ownership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable
from typing import Any

import faust
from faust.types import TP

from encoders.runtime import BatchEncoder
from streams import metrics
from streams.executor import BlockingRunner
from streams.fetch import ImageFetcher
from streams.follow import StreamFollower, replica_client_id
from streams.kafka import FaustConsumer, Key
from streams.ledger import OffsetLedger
from streams.ownership import Ownership
from streams.pipeline import Pipeline, open_towers
from streams.records import SourceRecord
from streams.settings import EmbedderSettings
from streams.sink import MilvusSink
from streams.state import VersionTable
from vitrine.kafka_config import faust_kafka_options

log = logging.getLogger(__name__)

VERSION_TABLE = "listing-versions"
RESEEK_AFTER_S = 2.0
SEEK_TIMEOUT_S = 10.0
LAG_EVERY_S = 1.0
LAG_TIMEOUT_S = 5.0


class FaustSender:
    """:class:`~streams.checkpoint.Sender` over the faust app's producer."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        """Queue a raw record; the awaitable resolves when the broker acknowledged it."""
        return await self._app.producer.send(topic, key, value, None, None, headers)


def build_app(settings: EmbedderSettings, client_id: str | None = None) -> faust.App:
    """The faust app with the embedder's configuration (aiokafka transport, memory store);
    ``client_id``: the Kafka client.id a describe of the group shows for this replica."""
    return faust.App(
        settings.app_id,
        broker_client_id=client_id or settings.app_id,
        # faust creates its data directory on first start; keep it with Vitrine's state, not
        # in the working directory (read-only in the service image).
        datadir=str(settings.home / "faust" / settings.app_id),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        table_standby_replicas=0,
        stream_buffer_maxsize=max(1024, settings.batch_size * 8),
        broker_max_poll_records=max(500, settings.batch_size * 4),
        loghandlers=[],
        **faust_kafka_options(settings, settings.session_timeout_s),
    )


class Embedder:
    """Loads the model, opens Milvus and runs the faust app until stopped."""

    def __init__(self, settings: EmbedderSettings, encoder: BatchEncoder | None = None) -> None:
        self.settings = settings
        self.encoder = encoder
        self.ledger = OffsetLedger()
        self.ownership = Ownership()
        self.pipeline: Pipeline | None = None
        self.kafka: FaustConsumer | None = None
        self._stop = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._batch_done = asyncio.Event()
        self._seeks: dict[Key, float] = {}  # partition -> last seek back
        self._max_events: int | None = None
        self._lag_partitions: set[int] = set()
        self.app: faust.App | None = None

    def request_stop(self) -> None:
        """Stop fetching; in-flight batches are abandoned without committing them."""
        self._stop.set()

    async def commit(self) -> dict[Key, int]:
        """Commit every partition's lowest unfinished offset that moved; returns those Kafka
        accepted. Refused ones stay committable and are retried on the next call."""
        assert self.kafka is not None
        async with self._commit_lock:
            offsets = self.ledger.committable()
            if not offsets:
                return {}
            accepted = await self.kafka.commit(offsets)
            self.ledger.mark_committed(accepted)
            if accepted:
                metrics.COMMITS.inc()
            return accepted

    def _use_encoder(self, encoder: BatchEncoder) -> None:
        self.encoder = encoder

    async def _resume_offset(self, key: Key) -> int:
        """Where the group resumes ``key``: its committed offset, else the log start."""
        assert self.kafka is not None
        delay = 0.2
        while True:
            try:
                return await self.kafka.resume_offset(key)
            except Exception as exc:  # the broker is away: nothing can be committed either
                log.warning("committed offset of %s unknown (%r); retrying", key, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _seek_back(self, key: Key, offset: int) -> None:
        """Fetch ``key`` again from ``offset``: faust dropped records it had fetched."""
        assert self.kafka is not None
        self._seeks[key] = time.monotonic()
        metrics.SEEKS_BACK.inc()
        log.warning("%s: offsets from %d were fetched but not delivered; seeking back", key, offset)
        try:
            # Bounded: the seek runs on faust's consumer thread, and waiting on it for long
            # (faust's own limit is its 90 s request timeout) would hold up the caller — the
            # intake agent or the commit tick — and with it every partition. A seek that did
            # not finish is tried again by the tick while the hole stays open.
            await asyncio.wait_for(self.kafka.seek(key, offset), SEEK_TIMEOUT_S)
        except TimeoutError:
            metrics.SEEKS_BACK_TIMED_OUT.inc()
            log.warning("seek of %s to %d did not finish in %.0f s", key, offset, SEEK_TIMEOUT_S)
        except Exception as exc:  # revoked meanwhile: its next owner starts from the commit
            log.warning("seek of %s to %d failed: %r", key, offset, exc)

    async def _reseek_holes(self) -> None:
        """Seek again where a hole stays open (the first seek's records can be dropped too)."""
        now = time.monotonic()
        for key, offset in self.ledger.holes().items():
            if now - self._seeks.get(key, 0.0) > RESEEK_AFTER_S:
                await self._seek_back(key, offset)

    async def _after_batch(self) -> None:
        # Never await a commit here: faust runs the consumer in its own thread, and a commit
        # waits there behind a fetch that may block for up to a second.
        self._batch_done.set()

    def _burst_done(self) -> bool:
        return (
            self._max_events is not None
            and self.ledger.passed() >= self._max_events
            and not self.ledger.committable()
            and self.ledger.unfinished() == 0
        )

    async def _on_revoked(self, keys: set[Key]) -> None:
        """Before the rebalance completes: nothing more is written for ``keys``, what was
        finished is committed, and their bookkeeping is dropped."""
        assert self.pipeline is not None
        await self.pipeline.fence(keys)
        for attempt in range(3):  # a refused commit here is redone by the next owner
            try:
                await self.commit()
            except Exception as exc:
                log.warning("commit before revocation failed (%d): %r", attempt, exc)
            if not any(key in keys for key in self.ledger.committable()):
                break
        self.pipeline.forget_partitions(keys)

    async def run(self, max_events: int | None = None) -> int:
        """Run until SIGTERM/SIGINT, :meth:`request_stop`, or ``max_events`` finished."""
        settings = self.settings
        self._max_events = max_events
        metrics.serve(settings.metrics_port)  # first: a taken port fails before anything opens
        runner = BlockingRunner(settings.encode_threads)
        given = self.encoder  # a caller's model is the caller's to close
        follower = StreamFollower(settings, replica_client_id(settings))
        settings = self.settings = await follower.start()  # the stream record over the env
        if self.encoder is None:
            self.encoder = await runner.run_model(
                open_towers, settings, settings.resolved_model_dir
            )
        encoder = self.encoder
        shared_dim = encoder.manifest.shared_space.get("dim") if encoder.has_shared_space else None
        sink = MilvusSink.for_settings(
            settings,
            encoder.manifest.embedding_dim,
            runner,
            shared_dim=shared_dim,
            sole_writer=follower.sole_writer,
        )
        await sink.open()
        fetcher = ImageFetcher(settings)
        (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # faust's mkdir has no parents
        app = self.app = build_app(settings, follower.client_id)
        self.kafka = FaustConsumer(app)
        source = settings.topic_events
        topic = app.topic(
            source,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            acks=False,
        )
        table = VersionTable(
            app,
            name=VERSION_TABLE,
            default=None,
            beacon=app.tables.beacon,
            key_type=bytes,  # raw keys: the same bytes, so the same partition, as the source
            partitions=settings.topic_partitions,
            use_partitioner=True,
        )
        app.tables.add(table)
        ownership = self.ownership
        pipeline = self.pipeline = Pipeline(
            settings,
            encoder,
            fetcher,
            sink,
            FaustSender(app),
            table,
            self.ledger,
            runner,
            on_batch_done=self._after_batch,
            ownership=ownership,
        )
        follower.attach(pipeline, sink, runner, on_switch=self._use_encoder)
        del encoder  # the pipeline holds the model; a hand-over replaces it (and frees this one)

        @app.agent(topic, concurrency=1)
        async def intake(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                key = (message.topic, message.partition)
                epoch = ownership.epoch(key)
                if epoch is None:
                    continue  # fetched before a revocation: the partition's next owner has it
                if not self.ledger.started(*key):
                    start = await self._resume_offset(key)
                    if not self.ledger.started(*key):
                        self.ledger.start(*key, start)
                headers = message.headers or []
                if isinstance(headers, dict):
                    headers = list(headers.items())
                hole = await pipeline.submit(
                    SourceRecord(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value,
                        tuple((str(k), v) for k, v in headers),
                        epoch,
                    )
                )
                if hole is not None:
                    await self._seek_back(key, hole)

        def _source(tps: set[TP]) -> set[Key]:
            return {(tp.topic, tp.partition) for tp in tps if tp.topic == source}

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def on_assigned(app: faust.App, assigned: set[TP], **_: Any) -> None:
            ownership.assign(_source(assigned))

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
            # faust awaits this inside aiokafka's rebalance listener: the group waits for it.
            await self._on_revoked(_source(revoked))

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await app.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app.stop(), 20)
            await fetcher.close()
            runner.close()
            if pipeline.encoder is not given:
                pipeline.encoder.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            raise
        work = asyncio.create_task(pipeline.run(), name="embedder-pipeline")
        ticker = asyncio.create_task(self._tick(), name="embedder-commits")
        lag = asyncio.create_task(self._watch_lag(), name="embedder-lag")
        follow = asyncio.create_task(follower.run(), name="embedder-stream")
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()  # a crashed stage: raise it
        finally:
            sink.stopping = True
            follower.stopping()
            for task in (ticker, lag, stopper, follow):
                task.cancel()
            if not work.done():
                # faust skips the revocation signal once stopping, so fence here: the batch
                # being written finishes (or fails) before the group can move the partitions.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pipeline.fence(ownership.held()), 60)
            work.cancel()
            # A call on faust's consumer thread may ignore cancellation; do not wait forever.
            await asyncio.wait({work, ticker, lag, stopper, follow}, timeout=10)
            await follower.close()
            for _attempt in range(3):
                try:
                    await self.commit()  # finished batches only; abandoned ones are not in it
                except Exception as exc:
                    log.warning("final commit failed: %r", exc)
                if not self.ledger.committable():
                    break
                await asyncio.sleep(0.5)
            try:
                await asyncio.wait_for(app.stop(), 20)
            except TimeoutError:
                log.warning("faust did not stop within 20 s; exiting anyway")
            await fetcher.close()
            runner.close()
            if pipeline.encoder is not given:
                pipeline.encoder.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(LAG_EVERY_S)
            await self._report_lag()

    async def _report_lag(self) -> None:
        """Set the per-partition lag gauge from log end offsets read now (also while paused)."""
        if self.kafka is None:
            return
        try:
            held = {key for key in self.kafka.assignment() if key[0] == self.settings.topic_events}
            ends = await asyncio.wait_for(self.kafka.high_watermarks(held), LAG_TIMEOUT_S)
        except Exception:  # not started, rebalancing or the broker away: report next turn
            return
        for stale in self._lag_partitions - {partition for _, partition in held}:
            metrics.CONSUMER_LAG.remove(str(stale))
            self._lag_partitions.discard(stale)
        for (topic, partition), high in ends.items():
            reached = self.ledger.position(topic, partition)
            if reached is None:
                continue
            metrics.CONSUMER_LAG.labels(partition=str(partition)).set(max(0, high - reached))
            self._lag_partitions.add(partition)

    async def _tick(self) -> None:
        assert self.pipeline is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_done.wait(), self.settings.commit_interval_s)
            self._batch_done.clear()
            if self.pipeline.idle:
                metrics.beat()  # idle with nothing to do; busy stages beat on progress
            try:
                await self._reseek_holes()
                await self.commit()
            except Exception as exc:
                log.warning("offset commit failed, will retry: %r", exc)
                continue
            if self._burst_done():
                log.info("burst mode: %d events finished and committed", self._max_events)
                self._stop.set()
