"""The embedder follows the stream record of the control topic: which collection it writes,
and with which model (``vitrine rollout finish`` writes it; docs/operations.md, "Model rollout").

At start the record wins over ``VITRINE_MILVUS_COLLECTION`` and ``VITRINE_MODEL_DIR`` (logged),
so a restarted replica never writes a dropped collection. While running, :meth:`StreamFollower.run`
polls the control topic every ``VITRINE_STREAM_POLL_S`` off the hot path; when the record names
another collection or model, the replica hands over at a batch boundary:

1. load the new model and open the collection (it must exist and hold rows of that model only;
   otherwise refused, logged and counted, and the replica keeps writing the old one);
2. stop forming batches and let those in flight finish through the checkpoint (rows, version
   state, announcements and offsets durable);
3. take the state topic's end offsets and wait (``VITRINE_STREAM_SWITCH_WAIT_S``) until the
   rollout job's group has committed up to them: every state record this replica wrote for the
   old collection has reached the new one, so the job never writes an older version over a row
   this replica is about to write there;
4. switch the pipeline's model and sink, form batches again, and acknowledge with a control
   record ``stream-ack/<app id>/<client id>`` that ``finish`` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from encoders.runtime import BatchEncoder
from schemas import (
    ROLLOUT_KEY,
    STREAM_KEY,
    RolloutRecord,
    StreamAck,
    StreamRecord,
    encode,
    stream_ack_key,
)
from streams import handover, metrics
from streams.errors import EmbedderError
from streams.executor import BlockingRunner
from streams.handover import Writing
from streams.pipeline import Pipeline, open_towers
from streams.settings import EmbedderSettings
from streams.sink import MilvusSink
from vitrine.control import ControlError, ControlReader, write_control
from vitrine.vectorstore import CollectionMismatch, connect

log = logging.getLogger(__name__)
T = TypeVar("T")


class SwitchRefused(EmbedderError):
    """The collection or model the stream record names cannot be written now; ``reason``."""

    reason = "stream_switch_refused"


def replica_client_id(settings: EmbedderSettings) -> str:
    """This process's Kafka client.id (``<app id>.<instance>``)."""
    instance = settings.instance_id or handover.default_instance(socket.gethostname(), os.getpid())
    return handover.client_id(settings.app_id, instance)


def check_collection(
    settings: EmbedderSettings, stream: StreamRecord, rollout: RolloutRecord | None
) -> None:
    """Refuse a collection that does not exist, that a rollout made for another model, or that
    holds rows of another model (blocking)."""
    name, model = stream.collection, stream.model_version
    if (
        rollout is not None
        and rollout.candidate_collection == name
        and rollout.candidate_model_version != model
    ):
        raise SwitchRefused(
            f"{name} was created for model {rollout.candidate_model_version}, not {model}",
            reason="collection_of_another_model",
        )
    client = connect(settings)
    try:
        if not client.has_collection(name):
            raise SwitchRefused(f"collection {name} does not exist", reason="collection_missing")
        # Model versions match ^[A-Za-z0-9][A-Za-z0-9_.+-]*$: nothing to escape.
        other = client.query(
            name, filter=f'model_version != "{model}"', output_fields=["model_version"], limit=1
        )
    finally:
        client.close()
    if other:
        raise SwitchRefused(
            f"{name} holds rows of model {other[0]['model_version']}, not only {model}",
            reason="collection_of_another_model",
        )


class StreamFollower:
    """Reads the stream record at start and hands the replica over when it changes."""

    retry_first_s = 5.0
    retry_max_s = 60.0

    def __init__(self, settings: EmbedderSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.stream: StreamRecord | None = None
        self.rollout: RolloutRecord | None = None
        self.writing = Writing(settings.milvus_collection, "")
        self.pipeline: Pipeline | None = None
        self.runner: BlockingRunner | None = None
        self.sink: MilvusSink | None = None
        self._reader: ControlReader | None = None
        # The control reader and the state probes: Kafka calls, one at a time, off the loop.
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="vitrine-embedder-control")
        self._acked: Writing | None = None
        self._retry_at = 0.0
        self._retry_s = self.retry_first_s
        self._on_switch: Callable[[BatchEncoder], None] | None = None

    # -- start ----------------------------------------------------------------------------------

    async def start(self) -> EmbedderSettings:
        """The settings to start with: the stream record's collection and model directory over
        the environment's. Raises :class:`SwitchRefused` when the record's collection cannot
        be written (a replica that cannot write it must not write the old one)."""
        settings = self.settings
        if not settings.follow_stream:
            return settings
        delay = 0.5
        while True:  # Kafka is needed anyway; the environment may name a dropped collection
            try:
                await self._poll(wait=True)
                break
            except ControlError as exc:
                log.warning("control topic not readable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        stream = self.stream
        if stream is None:
            return settings
        if stream.collection == settings.milvus_collection and Path(stream.model_dir) == Path(
            settings.resolved_model_dir
        ):
            log.info("stream record agrees with the settings: writing %s", stream.collection)
        else:
            log.warning(
                "stream record (written %s) over the settings: writing %s with %s (model %s) "
                "instead of VITRINE_MILVUS_COLLECTION=%s, VITRINE_MODEL_DIR=%s",
                stream.changed_at.isoformat(),
                stream.collection,
                stream.model_dir,
                stream.model_version,
                settings.milvus_collection,
                settings.resolved_model_dir,
            )
        delay = 0.5
        while True:  # Milvus away is waited for, as the sink waits for it; a refusal is final
            try:
                await asyncio.to_thread(check_collection, settings, stream, self.rollout)
                break
            except SwitchRefused:
                raise
            except Exception as exc:
                log.warning(
                    "cannot check collection %s (%s); retrying in %.1f s",
                    stream.collection,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        group = handover.catch_up_group(stream, self.rollout)
        if group is not None and not await self._job_caught_up(group):
            raise SwitchRefused(
                f"the rollout job ({group}) has not written {stream.collection} up to the state's "
                f"end within {settings.stream_switch_wait_s:.0f} s; is `vitrine rollout run` "
                "running?",
                reason="rollout_job_behind",
            )
        self.settings = self._settings_for(stream)
        return self.settings

    def attach(
        self,
        pipeline: Pipeline,
        sink: MilvusSink,
        runner: BlockingRunner,
        on_switch: Callable[[BatchEncoder], None] | None = None,
    ) -> None:
        """The running pipeline, its sink and executor: what a hand-over swaps (``on_switch``
        is told the new model, so nothing keeps the old one loaded)."""
        self.pipeline, self.sink, self.runner = pipeline, sink, runner
        self._on_switch = on_switch
        model = pipeline.model_version
        if self.stream is not None and self.stream.model_version != model:
            raise SwitchRefused(
                f"{self.stream.model_dir} holds model {model}, the stream record names "
                f"{self.stream.model_version}",
                reason="model_mismatch",
            )
        self.writing = Writing(self.settings.milvus_collection, model)
        metrics.MODEL.labels(collection=self.writing.collection, model_version=model).set(1)

    @property
    def sole_writer(self) -> bool:
        """Whether the replicas alone write the collection started with."""
        return self._sole_writer(self.stream)

    def _sole_writer(self, stream: StreamRecord | None) -> bool:
        """Not while ``stream``'s rollout job still feeds its collection."""
        return stream is None or handover.catch_up_group(stream, self.rollout) is None

    def _settings_for(self, stream: StreamRecord) -> EmbedderSettings:
        return self.settings.model_copy(
            update={"milvus_collection": stream.collection, "model_dir": Path(stream.model_dir)}
        )

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll the control topic and hand over when the stream record changes (until
        cancelled)."""
        if not self.settings.follow_stream:
            return
        while True:
            if self.stream is not None and self._acked != self.writing:
                await self._acknowledge()
            await asyncio.sleep(self.settings.stream_poll_s)
            try:
                await self._poll()
            except ControlError as exc:
                log.warning("control topic not readable: %s", exc)
                continue
            stream = self.stream
            if stream is None or not handover.switch_needed(stream, self.writing):
                continue
            if time.monotonic() < self._retry_at:
                continue
            try:
                await self._switch(stream)
            except Exception as exc:  # a bug here must not stop the embedder: it keeps writing
                log.exception("hand-over to %s failed", stream.collection)
                self._refused(stream, SwitchRefused(repr(exc), reason="error"))

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kafka, fn, *args)

    async def _poll(self, wait: bool = False) -> None:
        if self._reader is None:
            self._reader = ControlReader(self.settings)
        reader = self._reader
        records = await self._call(reader.read_to_end if wait else reader.poll)
        if STREAM_KEY in records:
            self.stream = handover.stream_in(records)
        if ROLLOUT_KEY in records:
            self.rollout = handover.rollout_in(records)

    async def _switch(self, stream: StreamRecord) -> None:
        """Hand the replica over to the collection and model of ``stream``."""
        pipeline = self.pipeline
        assert pipeline is not None and self.runner is not None
        log.info(
            "stream record names %s (model %s): handing over from %s (model %s)",
            stream.collection,
            stream.model_version,
            self.writing.collection,
            self.writing.model_version,
        )
        try:
            encoder, sink = await self._open(stream)
        except SwitchRefused as exc:
            self._refused(stream, exc)
            return
        paused = time.perf_counter()
        previous = pipeline.encoder
        try:
            await pipeline.hold()
            group = handover.catch_up_group(stream, self.rollout)
            if group is not None and not await self._job_caught_up(group):
                raise SwitchRefused(
                    f"the rollout job ({group}) has not written {stream.collection} up to the "
                    f"state's end within {self.settings.stream_switch_wait_s:.0f} s",
                    reason="rollout_job_behind",
                )
            pipeline.use_model(encoder, sink)
        except SwitchRefused as exc:
            self._refused(stream, exc)
            await asyncio.to_thread(encoder.close)
            return
        finally:
            pipeline.resume()
            metrics.STREAM_PAUSE.observe(time.perf_counter() - paused)
        await asyncio.to_thread(previous.close)  # the old towers' process, if any
        if self._on_switch is not None:
            self._on_switch(encoder)
        old = self.writing
        self.settings = self._settings_for(stream)
        self.sink = sink
        self.writing = Writing(stream.collection, stream.model_version)
        self._retry_s = self.retry_first_s
        with contextlib.suppress(KeyError):  # another follower in this process removed it
            metrics.MODEL.remove(old.collection, old.model_version)
        metrics.MODEL.labels(collection=stream.collection, model_version=stream.model_version).set(
            1
        )
        metrics.STREAM_SWITCHES.labels(outcome="switched").inc()
        log.warning(
            "now writing %s with model %s (was %s with %s)",
            stream.collection,
            stream.model_version,
            old.collection,
            old.model_version,
        )
        await self._acknowledge()

    async def _open(self, stream: StreamRecord) -> tuple[BatchEncoder, MilvusSink]:
        """Load the model and open the collection while the old ones keep writing."""
        assert self.runner is not None
        directory = Path(stream.model_dir)
        try:
            encoder = await asyncio.to_thread(open_towers, self.settings, directory)
        except Exception as exc:  # ModelError, OSError: the directory is not there or broken
            raise SwitchRefused(
                f"model directory {directory} not loadable: {exc}", reason="model_unloadable"
            ) from exc
        try:
            return encoder, await self._sink_for(stream, encoder)
        except SwitchRefused:
            await asyncio.to_thread(encoder.close)
            raise

    async def _sink_for(self, stream: StreamRecord, encoder: BatchEncoder) -> MilvusSink:
        """The sink of ``stream``'s collection, checked against the loaded model."""
        assert self.runner is not None
        if encoder.manifest.model_version != stream.model_version:
            raise SwitchRefused(
                f"{stream.model_dir} holds model {encoder.manifest.model_version}, the stream "
                f"record "
                f"names {stream.model_version}",
                reason="model_mismatch",
            )
        settings = self._settings_for(stream)
        try:
            await asyncio.to_thread(check_collection, settings, stream, self.rollout)
        except SwitchRefused:
            raise
        except Exception as exc:  # Milvus away: tried again later
            raise SwitchRefused(
                f"collection {stream.collection} not checked: {exc}", reason="milvus_unavailable"
            ) from exc
        manifest = encoder.manifest
        shared = manifest.shared_space.get("dim") if encoder.has_shared_space else None
        sink = MilvusSink.for_settings(
            settings,
            manifest.embedding_dim,
            self.runner,
            shared_dim=shared,
            sole_writer=self._sole_writer(stream),
        )
        try:
            await sink.open()  # retried while Milvus fails; the collection exists (checked)
        except CollectionMismatch as exc:
            raise SwitchRefused(str(exc), reason="collection_mismatch") from exc
        return sink

    async def _job_caught_up(self, group: str) -> bool:
        """Wait until ``group`` committed up to the state's end offsets as they are now (or the
        rollout finished meanwhile); False after ``stream_switch_wait_s``."""
        from streams.rollout.state import committed_positions, end_offsets

        settings = self.settings
        deadline = time.monotonic() + settings.stream_switch_wait_s
        try:
            ends = await self._call(end_offsets, settings)
        except Exception as exc:
            log.warning("end of %s unknown: %s", settings.topic_state, exc)
            return False
        while True:
            try:
                committed = await self._call(committed_positions, settings, group)
            except Exception as exc:
                log.warning("position of the rollout job unknown: %s", exc)
                committed = {}
            if handover.caught_up(ends, committed):
                return True
            metrics.beat()  # waiting on purpose, bounded: not stuck
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
            with contextlib.suppress(ControlError):
                await self._poll()
            stream = self.stream
            if stream is not None and handover.catch_up_group(stream, self.rollout) is None:
                return True  # the rollout finished: the job is gone and wrote all it had

    def _refused(self, stream: StreamRecord, exc: SwitchRefused) -> None:
        metrics.STREAM_SWITCHES.labels(outcome=exc.reason).inc()
        log.error(
            "not switching to %s (model %s) [%s]: %s; still writing %s, trying again in %.0f s",
            stream.collection,
            stream.model_version,
            exc.reason,
            exc,
            self.writing.collection,
            self._retry_s,
        )
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, self.retry_max_s)

    async def _acknowledge(self) -> None:
        """Tell ``vitrine rollout finish`` what this replica writes (retried on the next poll
        when the control topic cannot be written)."""
        writing = self.writing
        ack = StreamAck(
            app_id=self.settings.app_id,
            client_id=self.client_id,
            collection=writing.collection,
            model_version=writing.model_version,
            acked_at=datetime.now(UTC),
        )
        key = stream_ack_key(self.settings.app_id, self.client_id)
        try:
            await self._call(write_control, self.settings, key, encode(ack), 10.0)
        except ControlError as exc:
            log.warning("stream acknowledgement not written: %s", exc)
            return
        self._acked = writing

    def stopping(self) -> None:
        """Shutting down: the current sink stops retrying."""
        if self.sink is not None:
            self.sink.stopping = True

    async def close(self) -> None:
        """Close the control reader (after any Kafka call in progress)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call(reader.close), 15)
        self._kafka.shutdown(wait=False)
