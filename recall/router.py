"""The reply side of one recall client: its producer, reply consumer, thread and pending map.

Every request registered here leaves the pending map with exactly one outcome: its reply, a
timeout (:meth:`ReplyRouter.expire`), a delivery failure, or the client closing. Replies for
requests that already left the map are dropped as late; replies with a correlation id this
instance never sent are dropped as unknown.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from schemas import (
    ContractError,
    RecallReply,
    RecallRequest,
    ReplyRoute,
    decode_recall_reply,
    encode,
)
from schemas.headers import CORRELATION_ID_HEADER
from vitrine.kafka_config import LOW_LATENCY, producer_config, reply_consumer_config

from . import metrics
from .errors import RecallBackpressure, RecallClosed, RecallError, RecallTimeout
from .settings import RecallSettings

log = logging.getLogger(__name__)

# How long a new client waits for its own warm-up record (see ReplyRouter._warm_up).
WARM_UP_S = 10.0


@dataclass
class ClientStats:
    """Counters of one client instance."""

    sent: int = 0
    replies: int = 0
    timeouts: int = 0
    late: int = 0  # a reply for a request that already timed out or was answered
    unknown: int = 0  # a correlation id this instance never sent, or none at all
    mismatched: int = 0  # right correlation id, wrong request_id: never handed to the caller
    pending: int = 0


@dataclass
class _Waiting:
    future: concurrent.futures.Future[RecallReply]
    request_id: str
    sent_at: float


class ReplyRouter:
    """Owns the producer, the reply consumer, its thread and the pending map of one client."""

    def __init__(
        self,
        settings: RecallSettings,
        reply_topic: str | None,
        reply_partition: int | None,
        max_pending: int | None,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        self.settings = settings
        self.max_pending = max_pending or settings.recall_client_max_pending
        self.stats = ClientStats()
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Waiting] = {}
        self._finished: OrderedDict[bytes, None] = OrderedDict()
        self._finished_cap = min(100_000, 4 * self.max_pending)
        self._closed = threading.Event()
        self._owns_topic = reply_topic is None
        instance = uuid.uuid4().hex[:16]
        self._warm_id = f"warm-up-{instance}".encode()  # sent on a private reply topic only
        self._warm = threading.Event()
        if reply_topic is None:
            reply_topic = f"{settings.topic_recall_replies}.{instance}"
            reply_partition = 0
            self._create_topic(reply_topic)
        elif reply_partition is None:
            raise ValueError("a pinned reply_topic needs its reply_partition")
        self.route_topic = reply_topic
        self.route_partition = reply_partition
        self._producer = Producer(producer_config(settings, **LOW_LATENCY))
        self._consumer = Consumer(reply_consumer_config(settings, instance))
        if self._owns_topic:
            start = OFFSET_BEGINNING
        else:
            # Only replies produced from now on are ours; fix the start before any request.
            _low, start = self._consumer.get_watermark_offsets(
                TopicPartition(reply_topic, reply_partition), timeout=10.0
            )
        self._consumer.assign([TopicPartition(reply_topic, reply_partition, start)])
        self._thread = threading.Thread(
            target=self._pump, name=f"recall-client-{instance}", daemon=True
        )
        self._thread.start()
        if self._owns_topic:
            self._warm_up()

    # -- lifecycle ---------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Send one record to the client's own reply topic and wait until it is read back.

        A fresh idempotent producer holds a record sent before it has its producer id until
        its next idempotence timer tick, and a fresh consumer of a new topic starts fetching
        late: without this the first request took 0.5-0.9 s instead of ~10 ms (and would fail
        with a deadline under that). Only on a private reply topic (nobody else reads it)."""
        started = time.monotonic()

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:  # the requests will fail the same way, with a reason
                log.warning("recall client: warm-up record not delivered: %s", err)
                self._warm.set()

        try:
            self._producer.produce(
                self.route_topic,
                value=b"",
                partition=self.route_partition,
                headers=[(CORRELATION_ID_HEADER, self._warm_id)],
                on_delivery=delivered,
            )
        except Exception as exc:  # the requests will say what is wrong, with a reason
            log.warning("recall client: warm-up record not sent: %s", exc)
            return
        self._producer.poll(0)
        if self._warm.wait(WARM_UP_S):
            log.debug("recall client ready in %.3f s", time.monotonic() - started)
        else:  # requests still work, the first ones may be slow
            log.warning("recall client: warm-up record not read back in %.0f s", WARM_UP_S)

    def _create_topic(self, topic: str) -> None:
        from confluent_kafka.admin import NewTopic

        from vitrine.topics import admin_client

        admin = admin_client(self.settings)
        new = NewTopic(
            topic,
            num_partitions=1,
            replication_factor=self.settings.topic_replication,
            config={
                "retention.ms": str(self.settings.recall_client_reply_retention_ms),
                "min.insync.replicas": str(self.settings.topic_min_insync_replicas),
            },
        )
        try:
            admin.create_topics([new], operation_timeout=30, request_timeout=30)[topic].result()
        except Exception as exc:
            raise RecallError(
                f"could not create reply topic {topic}: {exc}", reason="reply_topic_unavailable"
            ) from exc
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # wait until the broker serves its metadata
            info = admin.list_topics(topic, timeout=5.0).topics.get(topic)
            if info is not None and info.error is None and info.partitions:
                return
            time.sleep(0.05)
        raise RecallError(f"reply topic {topic} did not appear", reason="reply_topic_unavailable")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=10.0)
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
            metrics.CLIENT_PENDING.dec(len(waiting))
        for entry in waiting:
            _settle(entry.future, exception=RecallClosed("the recall client was closed"))
        try:
            self._producer.flush(5.0)
            self._consumer.close()
        finally:
            if self._owns_topic:
                self._delete_topic()

    def _delete_topic(self) -> None:
        try:
            from vitrine.topics import admin_client

            admin = admin_client(self.settings)
            admin.delete_topics([self.route_topic], operation_timeout=30)[self.route_topic].result()
        except Exception as exc:
            log.warning("reply topic %s not deleted: %s", self.route_topic, exc)

    # -- requests ----------------------------------------------------------------------------

    def submit(
        self, request: RecallRequest, key: bytes | None
    ) -> tuple[bytes, concurrent.futures.Future[RecallReply]]:
        """Register and send ``request``; the future completes with its reply."""
        if self._closed.is_set():
            raise RecallClosed("the recall client is closed")
        correlation_id = os.urandom(16)
        future: concurrent.futures.Future[RecallReply] = concurrent.futures.Future()
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise RecallBackpressure(
                    f"{len(self._pending)} requests already wait for replies "
                    f"(max_pending={self.max_pending})"
                )
            self._pending[correlation_id] = _Waiting(future, request.request_id, time.monotonic())
            self.stats.sent += 1
        metrics.CLIENT_PENDING.inc()
        route = ReplyRoute(self.route_topic, correlation_id, self.route_partition)

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self._resolve(
                    correlation_id,
                    exception=RecallError(
                        f"request not delivered: {err}", reason="request_undeliverable"
                    ),
                )

        headers: list[tuple[str, str | bytes | None]] = [*route.request_headers()]
        try:
            self._producer.produce(
                self.settings.topic_recall_requests,
                value=encode(request),
                key=key,
                headers=headers,
                on_delivery=delivered,
            )
        except BufferError as exc:
            self._discard(correlation_id)
            raise RecallBackpressure("the producer queue is full") from exc
        except Exception as exc:
            self._discard(correlation_id)
            raise RecallError(f"request not sent: {exc}", reason="request_undeliverable") from exc
        self._producer.poll(0)
        return correlation_id, future

    def expire(self, correlation_id: bytes) -> RecallReply | None:
        """The deadline passed: forget the request, unless its reply just arrived."""
        with self._lock:
            entry = self._pending.pop(correlation_id, None)
            if entry is not None:
                self._remember(correlation_id)
        if entry is None:
            return None  # resolved meanwhile; the caller reads its future
        metrics.CLIENT_PENDING.dec()
        self.stats.timeouts += 1
        metrics.CLIENT_TIMEOUTS.inc()
        _settle(entry.future, exception=RecallTimeout("no reply before the deadline"))
        return None

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- the reply thread --------------------------------------------------------------------

    def _pump(self) -> None:
        while not self._closed.is_set():
            try:
                # consume() would wait its whole timeout for a full batch: wait for one reply,
                # then take whatever else is already fetched.
                first = self._consumer.poll(0.05)
                messages = [] if first is None else [first]
                if first is not None:
                    messages += self._consumer.consume(num_messages=500, timeout=0)
            except Exception:
                log.exception("reply consumer failed; retrying")
                time.sleep(0.1)
                continue
            for message in messages:
                if message.error() is not None:
                    log.debug("reply consumer: %s", message.error())
                    continue
                self._on_reply(message)
            self._producer.poll(0)

    def _on_reply(self, message: Any) -> None:
        correlation_id = None
        for name, value in message.headers() or ():
            if name == CORRELATION_ID_HEADER and value is not None:
                correlation_id = bytes(value)
        if correlation_id is None:
            self._drop("unknown")
            return
        if correlation_id == self._warm_id:
            self._warm.set()
            return
        with self._lock:
            entry = self._pending.get(correlation_id)
            known = entry is not None or correlation_id in self._finished
        if entry is None:
            self._drop("late" if known else "unknown")
            return
        try:
            reply = decode_recall_reply(message.value())
        except ContractError as exc:
            self._resolve(
                correlation_id,
                exception=RecallError(f"unreadable reply: {exc}", reason=exc.reason),
            )
            return
        if reply.request_id is not None and reply.request_id != entry.request_id:
            with self._lock:
                self.stats.mismatched += 1
            log.warning("reply for %s carried request_id %s", entry.request_id, reply.request_id)
            return
        self._resolve(correlation_id, result=reply)

    def _resolve(
        self,
        correlation_id: bytes,
        *,
        result: RecallReply | None = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            entry = self._pending.pop(correlation_id, None)
            if entry is not None:
                self._remember(correlation_id)
                if result is not None:
                    self.stats.replies += 1
        if entry is None:
            if result is not None:
                self._drop("late")
            return
        metrics.CLIENT_PENDING.dec()
        if result is not None:
            metrics.CLIENT_ROUND_TRIP.observe(time.monotonic() - entry.sent_at)
            _settle(entry.future, result=result)
        else:
            _settle(entry.future, exception=exception)

    def _discard(self, correlation_id: bytes) -> None:
        with self._lock:
            if self._pending.pop(correlation_id, None) is not None:
                self.stats.sent -= 1
                metrics.CLIENT_PENDING.dec()

    def _remember(self, correlation_id: bytes) -> None:  # under self._lock
        self._finished[correlation_id] = None
        while len(self._finished) > self._finished_cap:
            self._finished.popitem(last=False)

    def _drop(self, why: str) -> None:
        with self._lock:
            if why == "late":
                self.stats.late += 1
            else:
                self.stats.unknown += 1
        metrics.CLIENT_DROPPED.labels(why=why).inc()

    def snapshot(self) -> ClientStats:
        with self._lock:
            return ClientStats(**{**self.stats.__dict__, "pending": len(self._pending)})


def _settle(
    future: concurrent.futures.Future[RecallReply],
    *,
    result: RecallReply | None = None,
    exception: BaseException | None = None,
) -> None:
    # An asyncio caller that gave up cancels the future; settling it then is a no-op.
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except concurrent.futures.InvalidStateError:
        pass
