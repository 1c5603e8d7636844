"""The recall worker: reads ``recall.requests`` in a consumer group and answers each request.

At-least-once: a request's offset is stored only after its reply is acknowledged by the broker
(or found undeliverable for good), so a replica killed mid-batch leaves its unanswered requests
to the replica that takes over its partitions. Callers may then see a second reply for the same
correlation id; clients drop it as late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from schemas import RecallReply, RecallStatus, encode

from . import metrics, replies
from .answer import Inbound, RecallAnswerer, decode
from .index import VectorIndex
from .live import Live, PointerFollower, collection_of, current_pointer
from .query_embedding import QueryEmbedder
from .routing import ReplyTarget, reply_target
from .settings import RecallSettings

log = logging.getLogger(__name__)

_TOPIC_CACHE_S = 30.0
_MISSING_TOPIC_CACHE_S = 10.0
#: How long one poll waits while batches are in flight. A new request wakes it at once, and
#: the answering threads produce their own replies, so this only bounds how late delivery
#: reports are served and offsets stored: short enough for that, long enough not to spin.
_BUSY_POLL_S = 0.01


@dataclass
class _Outgoing:
    message: Any  # confluent_kafka.Message
    target: ReplyTarget
    reply: RecallReply
    error: Any = None  # KafkaError from the delivery report
    delivered: bool = False
    settled: bool = False  # the delivery report arrived (delivered or failed)
    skipped: str | None = None  # why no reply was produced at all

    @property
    def waiting(self) -> bool:
        """Produced, and its delivery report not in yet."""
        return self.skipped is None and not self.settled


@dataclass
class _Batch:
    """Requests read together, being answered (``future``) until they are finished."""

    records: list[Any]
    started: float
    future: Future[list[_Outgoing]]


@dataclass
class WorkerStats:
    """Counters of one worker instance (the Prometheus metrics aggregate all of them)."""

    answered: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    undeliverable: int = 0


def worker_consumer_config(settings: RecallSettings) -> dict[str, Any]:
    """Consumer settings of the worker (pure): at-least-once, fast failover."""
    from vitrine.kafka_config import consumer_config

    return consumer_config(
        settings,
        settings.recall_group_id,
        **{
            "session.timeout.ms": settings.recall_session_timeout_ms,
            "heartbeat.interval.ms": max(1000, settings.recall_session_timeout_ms // 5),
            "auto.commit.interval.ms": settings.recall_commit_interval_ms,
            "partition.assignment.strategy": "cooperative-sticky",
        },
    )


def worker_producer_config(settings: RecallSettings) -> dict[str, Any]:
    """Producer settings of the worker's replies (pure)."""
    from vitrine.kafka_config import LOW_LATENCY, producer_config

    return producer_config(
        settings,
        **LOW_LATENCY,
        **{"message.timeout.ms": int(settings.recall_reply_timeout_s * 1000)},
    )


class RecallWorker:
    """Consume, answer, reply, then store offsets; never dies on input."""

    def __init__(
        self,
        settings: RecallSettings,
        index: VectorIndex,
        *,
        consumer: Any = None,
        producer: Any = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.stats = WorkerStats()
        live = Live(collection_of(index) or settings.milvus_collection, None, None, index)
        # Swapped whole when the live pointer moves; a batch reads it once (recall/live.py).
        self._answerer = self._answerer_for(live)
        self._follower = (
            PointerFollower(settings, lambda name: _open_collection(settings, name), live)
            if settings.recall_follow_live
            else None
        )
        self._consumer = consumer or Consumer(worker_consumer_config(settings))
        self._producer = producer or Producer(worker_producer_config(settings))
        self._stop = threading.Event()
        self._topics: dict[str, tuple[float, int | None]] = {}
        self._topics_lock = threading.Lock()  # the answering threads share the cache
        self._subscribed = False

    def _answerer_for(self, live: Live) -> RecallAnswerer:
        settings = self.settings
        return RecallAnswerer(
            live.index,
            max_search_vectors=settings.recall_max_search_vectors,
            default_model_version=live.model_version or settings.recall_default_model_version,
            embedder=QueryEmbedder(live.model_dir or settings.resolved_model_dir),
        )

    def _follow(self, *, wait: bool = False) -> None:
        """Answer from the collection the live pointer names, once it moved and is loaded."""
        if self._follower is None:
            return
        live = self._follower.changed(wait=wait)
        if live is not None:
            self._answerer = self._answerer_for(live)

    @property
    def live_collection(self) -> str:
        """The collection requests are answered from now."""
        return self._answerer.collection

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in hand (safe from signal handlers)."""
        self._stop.set()

    def run(self, *, max_requests: int | None = None, burst: bool = False) -> WorkerStats:
        """Answer requests until stopped, ``max_requests`` were answered, or (``burst``) the
        assigned partitions are drained.

        Up to ``recall_search_concurrency`` batches are answered at once, each in a thread of
        its own that produces its replies as soon as they are built; this loop keeps reading
        meanwhile, and finishes the batches (replies acknowledged, offsets stored) one at a
        time in the order they were read, so a stored offset never passes a request still
        unanswered.
        """
        if not self._subscribed:
            self._consumer.subscribe([self.settings.topic_recall_requests])
            self._subscribed = True
        log.info(
            "recall worker consuming %s as group %s",
            self.settings.topic_recall_requests,
            self.settings.recall_group_id,
        )
        self._follow(wait=True)
        depth = self.settings.recall_search_concurrency
        in_flight: deque[_Batch] = deque()
        with ThreadPoolExecutor(depth, thread_name_prefix="recall-search") as pool:
            try:
                while not self._stop.is_set():
                    self._follow()
                    self._finish_ready(in_flight)
                    queued = sum(len(b.records) for b in in_flight)
                    if max_requests is not None and self.stats.answered + queued >= max_requests:
                        if not in_flight:
                            break
                        self._complete(in_flight)
                        continue
                    if len(in_flight) >= depth:
                        self._complete(in_flight)  # every thread busy: wait for the oldest
                        continue
                    budget = self.settings.recall_batch_max
                    if max_requests is not None:
                        left = max_requests - self.stats.answered - queued
                        budget = max(1, min(budget, left))
                    messages = self._read(
                        budget, _BUSY_POLL_S if in_flight else self.settings.recall_poll_timeout_s
                    )
                    if messages:
                        batch = self._start(messages, pool)
                        if batch is not None:
                            in_flight.append(batch)
                    elif not in_flight:
                        self._producer.poll(0)
                        if burst and self._drained():
                            break
            finally:
                while in_flight:
                    self._complete(in_flight)
        return self.stats

    def close(self) -> None:
        """Flush replies, commit stored offsets and leave the group."""
        try:
            self._producer.flush(self.settings.recall_reply_timeout_s)
        finally:
            self._consumer.close()
            if self._follower is not None:
                self._follower.close()

    # -- one batch ---------------------------------------------------------------------------

    def handle(self, messages: Sequence[Any]) -> None:
        """Answer ``messages`` (already read), produce the replies, store the offsets."""
        batch = self._start(messages, None)
        if batch is not None:
            self._complete(deque([batch]))

    def _start(self, messages: Sequence[Any], pool: ThreadPoolExecutor | None) -> _Batch | None:
        """Begin answering ``messages`` (in ``pool``, or here when None)."""
        started = time.monotonic()
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                log.warning("consume error: %s", error)
                continue
            records.append(message)
        if not records:
            return None
        metrics.POLL_BATCH_SIZE.observe(len(records))
        future: Future[list[_Outgoing]]
        if pool is None:
            future = Future()
            future.set_result(self._answer(records, started))
        else:
            future = pool.submit(self._answer, records, started)
        return _Batch(records, started, future)

    def _finish_ready(self, in_flight: deque[_Batch]) -> None:
        """Serve delivery reports, then finish the oldest batches whose replies are all
        settled, in read order, without waiting for anything."""
        self._producer.poll(0)
        while in_flight and in_flight[0].future.done():
            if any(out.waiting for out in in_flight[0].future.result()):
                return
            self._complete(in_flight)

    def _complete(self, in_flight: deque[_Batch]) -> None:
        """Finish the oldest batch of ``in_flight``: wait until it is answered and its replies
        are acknowledged, store its offsets. A partition rewound for a failed reply gets no
        stored offset from any batch read before the rewind: those are drained here, then it
        re-reads."""
        rewound: dict[tuple[str, int], int] = {}
        first = True
        while in_flight and (first or rewound):
            first = False
            batch = in_flight.popleft()
            outgoing = batch.future.result()
            deadline = time.monotonic() + self.settings.recall_reply_timeout_s + 5.0
            while any(out.waiting for out in outgoing):
                # message.timeout.ms (the reply timeout) bounds every report; this only guards
                # against a report that never comes.
                self._producer.poll(0.05)
                if time.monotonic() > deadline:
                    log.warning("replies still in flight after the reply timeout; waiting")
                    deadline = time.monotonic() + self.settings.recall_reply_timeout_s
            self._finish(outgoing, batch.started, rewound)

    def _answer(self, records: list[Any], started: float) -> list[_Outgoing]:
        default = self.settings.topic_recall_replies
        routes = [reply_target(m.headers(), default) for m in records]
        answerable = [i for i, (_, problem) in enumerate(routes) if problem is None]
        try:
            answered = self._answerer.answer(
                [Inbound(records[i].value(), started) for i in answerable]
            )
        except Exception as exc:  # a bug must cost one batch of error replies, not the worker
            log.exception("answering a batch of %d failed", len(answerable))
            answered = [
                replies.failure(
                    RecallStatus.ERROR, "internal_error", f"{type(exc).__name__}: {exc}", None, 0.0
                )
                for _ in answerable
            ]
        by_index = dict(zip(answerable, answered, strict=True))
        outgoing = []
        for i, message in enumerate(records):
            target, problem = routes[i]
            reply = by_index.get(i)
            if reply is None:
                reason = problem.reason if problem is not None else "internal_error"
                detail = problem.message if problem is not None else "no reply was built"
                reply = replies.failure(
                    RecallStatus.INVALID if problem is not None else RecallStatus.ERROR,
                    reason,
                    detail,
                    decode(message.value())[2],
                    time.monotonic() - started,
                )
            outgoing.append(_Outgoing(message, target, reply))
        for out in outgoing:  # at once, from this thread: the loop may be busy reading
            self._produce(out)
        return outgoing

    def _produce(self, out: _Outgoing) -> None:
        partitions = self._partition_count(out.target.topic)
        if partitions is None:
            out.skipped = "unknown_topic"
        elif out.target.partition is not None and out.target.partition >= partitions:
            out.skipped = "unknown_partition"
        if out.skipped is not None:
            log.warning(
                "no reply for %s: %s %s[%s]",
                out.reply.request_id,
                out.skipped,
                out.target.topic,
                out.target.partition,
            )
            return

        def delivered(err: Any, _msg: Any) -> None:
            out.error = err
            out.delivered = err is None
            out.settled = True

        kwargs: dict[str, Any] = {
            "value": encode(out.reply),
            "key": out.message.key(),
            "headers": out.target.headers(),
            "on_delivery": delivered,
        }
        if out.target.partition is not None:
            kwargs["partition"] = out.target.partition
        while True:
            try:
                self._producer.produce(out.target.topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
            except Exception as exc:  # KafkaException for a refused record
                out.skipped = "produce_refused"
                log.warning("reply to %s refused: %s", out.target.topic, exc)
                break

    def _finish(
        self, outgoing: list[_Outgoing], started: float, rewound: dict[tuple[str, int], int]
    ) -> None:
        from confluent_kafka import TopicPartition

        for out in outgoing:
            tp = (out.message.topic(), out.message.partition())
            if tp in rewound and out.message.offset() >= rewound[tp]:
                continue  # re-read after the rewind below, answered again then
            if out.skipped is None and not out.delivered:
                retriable = out.error is not None and out.error.retriable()
                if retriable:
                    # Broker trouble: read this request again rather than lose its reply.
                    log.warning("reply delivery failed (%s); will re-read", out.error)
                    self._consumer.seek(TopicPartition(tp[0], tp[1], out.message.offset()))
                    rewound[tp] = out.message.offset()
                    continue
                out.skipped = out.error.name() if out.error is not None else "not_delivered"
            if out.skipped is not None:
                metrics.UNDELIVERABLE.labels(reason=out.skipped).inc()
                self.stats.undeliverable += 1
            status = out.reply.status.value
            metrics.REQUESTS.labels(status=status).inc()
            metrics.DURATION.observe(time.monotonic() - started)
            self.stats.answered += 1
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            try:
                self._consumer.store_offsets(message=out.message)
            except Exception as exc:  # partition revoked meanwhile: its new owner re-reads
                log.warning("offset of %s[%d]@%d not stored: %s", *tp, out.message.offset(), exc)

    # -- Kafka helpers -----------------------------------------------------------------------

    def _read(self, budget: int, wait_s: float) -> list[Any]:
        first = self._consumer.poll(wait_s)
        if first is None:
            return []
        if budget <= 1:
            return [first]
        # Whatever else is already fetched joins the batch, without waiting for more.
        return [first, *self._consumer.consume(num_messages=budget - 1, timeout=0)]

    def _partition_count(self, topic: str) -> int | None:
        now = time.monotonic()
        cached = self._topics.get(topic)
        if cached is not None and cached[0] > now:
            return cached[1]
        count = self._metadata_partitions(topic)
        if count is None and cached is None:
            # A client may have created its reply topic a moment ago: ask once more.
            time.sleep(0.5)
            count = self._metadata_partitions(topic)
        ttl = _TOPIC_CACHE_S if count is not None else _MISSING_TOPIC_CACHE_S
        with self._topics_lock:
            self._topics[topic] = (now + ttl, count)
            if len(self._topics) > 10_000:
                self._topics = {t: v for t, v in self._topics.items() if v[0] > now}
        return count

    def _metadata_partitions(self, topic: str) -> int | None:
        try:
            metadata = self._producer.list_topics(topic, timeout=5.0)
        except Exception as exc:
            log.warning("metadata of %s unavailable: %s", topic, exc)
            return None
        info = metadata.topics.get(topic)
        if info is not None and info.error is None and info.partitions:
            return len(info.partitions)
        return None

    def _drained(self) -> bool:
        from confluent_kafka import OFFSET_INVALID

        assignment = self._consumer.assignment()
        if not assignment:
            return False
        for tp in self._consumer.position(assignment):
            low, high = self._consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            position = tp.offset
            if position == OFFSET_INVALID or position < 0:
                committed = self._consumer.committed([tp], timeout=5.0)[0].offset
                position = committed if committed >= 0 else low
            if position < high:
                return False
        return True


def _open_collection(settings: RecallSettings, collection: str) -> VectorIndex:
    from vitrine.vectorstore import connect

    from .index import MilvusIndex

    client = connect(settings)
    try:
        return MilvusIndex.open(
            client,
            collection,
            consistency_level=settings.recall_consistency_level,
            timeout_s=settings.recall_search_timeout_s,
        )
    except Exception:
        client.close()
        raise


def open_index(settings: RecallSettings, wait_s: float = 0.0) -> VectorIndex:
    """Connect to Milvus and open the live collection (the one the live pointer names, else
    VITRINE_MILVUS_COLLECTION), waiting up to ``wait_s`` for it."""
    from .errors import SearchFailed

    deadline = time.monotonic() + wait_s
    while True:
        pointer = current_pointer(settings) if settings.recall_follow_live else None
        collection = pointer.collection if pointer is not None else settings.milvus_collection
        try:
            return _open_collection(settings, collection)
        except Exception as exc:
            if time.monotonic() >= deadline:
                if isinstance(exc, SearchFailed):
                    raise
                raise SearchFailed(str(exc), reason="milvus_unavailable") from exc
            log.info("waiting for collection %s: %s", collection, exc)
            time.sleep(1.0)
