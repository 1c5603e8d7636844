"""Stage 3 of the pipeline: make a batch's side effects durable, then finish its offsets.

For each batch, in the order the batches were formed: dead letters are produced and
acknowledged; Milvus deletes and upserts return; the version table's changelog records and the
embedded events are acknowledged by the broker; only then are the batch's offsets marked
finished in the :class:`~streams.ledger.OffsetLedger`. A SIGKILL at any point therefore leaves
every committed offset with all of its effects durable, and every uncommitted one is replayed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from schemas import EmbeddedEvent, Outcome, dead_letter_headers, encode, freshness_seconds
from streams import guard, metrics
from streams.guard import ListingState, Verdict
from streams.ledger import OffsetLedger
from streams.records import Work
from streams.settings import EmbedderSettings
from streams.sink import Mutation, VectorSink
from streams.state import PendingStates, StateStore

log = logging.getLogger(__name__)

_Record = tuple[str, bytes | None, bytes | None, list[Any]]  # topic, key, value, headers


class Sender(Protocol):
    """Produces raw records; the returned awaitable resolves once the broker has them."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        """Queue one record for sending."""


class BatchWriter:
    """Writes batches in order; ``reembed`` re-fetches and encodes rows that vanished."""

    retry_delay_s = 0.5

    def __init__(
        self,
        settings: EmbedderSettings,
        model_version: str,
        sink: VectorSink,
        sender: Sender,
        states: StateStore,
        pending: PendingStates,
        ledger: OffsetLedger,
        reembed: Callable[[list[Work]], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.model_version = model_version
        self.sink = sink
        self.sender = sender
        self.states = states
        self.pending = pending
        self.ledger = ledger
        self.reembed = reembed
        self.finished = 0

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
            if durable is not None and durable.version >= event.version:
                work.verdict = Verdict.STALE
        await self._fill_unchanged(batch)  # may dead-letter a row that must be re-embedded
        await self._deliver(
            [
                (
                    self.settings.topic_dlq,
                    work.record.key,
                    work.record.value,
                    dead_letter_headers(list(work.record.headers), work.dead_letter),
                )
                for work in batch
                if work.dead_letter is not None
            ]
        )
        now = datetime.now(UTC)
        now_ms = int(now.timestamp() * 1000)
        mutations = [m for w in batch if (m := self._mutation(w, now_ms)) is not None]
        if mutations:
            await self.sink.write(mutations)
        embedded = [r for w in batch if (r := self._account(w, now)) is not None]
        await self.states.durable()
        await self._deliver(embedded)
        for work in batch:
            if work.event is not None:
                self.pending.release(work.event.listing_id.encode(), work)
            self.ledger.finish(work.record.topic, work.record.partition, work.record.offset)
        self.finished += len(batch)
        metrics.IN_FLIGHT.dec(len(batch))

    async def _deliver(self, records: list[_Record]) -> None:
        """Produce the records and wait until the broker has all of them (re-sending)."""
        while records:
            futures = [await self.sender.send(*record) for record in records]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [
                rec for rec, res in zip(records, results, strict=True) if isinstance(res, Exception)
            ]
            if failed:
                log.warning("%d records not delivered; re-sending", len(failed))
                await asyncio.sleep(self.retry_delay_s)
            records = failed

    async def _fill_unchanged(self, batch: list[Work]) -> None:
        unchanged = [
            w for w in batch if w.unchanged and w.dead_letter is None and w.verdict is Verdict.EMBED
        ]
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
            await self.reembed(missing)

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

    def _account(self, work: Work, now: datetime) -> _Record | None:
        """Metrics and the version table for one work item; its embedded event, if any."""
        event = work.event
        if work.dead_letter is not None:
            # A dead-lettered version does not count as seen: the row keeps the newest
            # version that could be written, whatever order the events arrived in.
            metrics.EVENTS.labels(outcome="dead_lettered", reason=work.dead_letter.reason).inc()
            return None
        if event is None:
            return None
        if work.verdict is Verdict.STALE:
            metrics.EVENTS.labels(outcome="skipped_stale", reason="").inc()
            return None
        if work.verdict is Verdict.EMBED and work.embedding is None:
            return None
        key = event.listing_id.encode()
        self.states[key] = guard.after_write(event, work.image_sha256).to_json()
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
        return (self.settings.topic_embedded, key, encode(embedded), [])
