"""The sink stage: one method, :meth:`Checkpoint.commit`, owns the durability order of a batch.

For each batch, in the order the batches were formed, under one lock:

0. work of partitions this replica no longer holds (:mod:`streams.ownership`) is abandoned;
   the durable state decides which version of each listing is written (:mod:`streams.decide`);
1. dead letters are produced and acknowledged;
2. Milvus deletes and upserts return (``embedded_at`` is stamped after that);
3. the version state records the written versions and its changelog is acknowledged;
4. the embedded events and the catalogue's state records (``listings.state``: the listing's
   fields, or a tombstone for a delete) are produced and acknowledged;
5. the batch's offsets are finished in the :class:`~streams.ledger.OffsetLedger`, which the
   committer commits.

A SIGKILL between 2 and 3 replays the batch: the rows are written again (same versions,
idempotent) and announced. Between 3 and 4, the replay finds the version in the restored state
and announces it again (:class:`~streams.decide.Action.ANNOUNCE`), its state record too.
Announcements follow the durable state, which never goes back, so a listing's announcements
never go back in version.
A revocation takes the same lock (:meth:`Checkpoint.fence`), so the batch being written
finishes before the rebalance completes and later batches skip the revoked partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from schemas import (
    CatalogueEntry,
    EmbeddedEvent,
    Outcome,
    dead_letter_headers,
    encode,
    freshness_seconds,
)
from streams import guard, metrics
from streams.decide import Action, Candidate, plan
from streams.errors import WriteAbandoned
from streams.guard import ListingState
from streams.ledger import OffsetLedger
from streams.ownership import Key, Ownership
from streams.records import (
    Announce,
    Decoded,
    Delete,
    Encoded,
    Ready,
    Rejected,
    Settled,
    Skipped,
    Unchanged,
    Vectors,
)
from streams.settings import EmbedderSettings
from streams.sink import Mutation, VectorSink
from streams.state import PendingStates, StateStore
from vitrine.vectorstore import IMAGE_VECTOR_FIELD

log = logging.getLogger(__name__)

_Record = tuple[str, bytes | None, bytes | None, list[Any]]  # topic, key, value, headers


class Sender(Protocol):
    """Produces raw records; the returned awaitable resolves once the broker has them."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> Awaitable[Any]:
        """Queue one record for sending."""


class Checkpoint:
    """Makes batches durable in order; ``reembed`` re-fetches and encodes rows that vanished."""

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
        ownership: Ownership,
        reembed: Callable[[list[Unchanged]], Awaitable[list[Encoded | Rejected]]],
    ) -> None:
        self.settings = settings
        self.model_version = model_version
        self.sink = sink
        self.sender = sender
        self.states = states
        self.pending = pending
        self.ledger = ledger
        self.ownership = ownership
        self.reembed = reembed
        self.finished = 0  # events whose side effects are durable
        self.settled = 0  # events finished or abandoned
        self._lock = asyncio.Lock()

    async def fence(self, partitions: Iterable[Key]) -> None:
        """Revocation: later batches skip these partitions; returns once the batch being
        written (which may hold some of their events) is durable."""
        self.ownership.fence(partitions)
        async with self._lock:
            pass

    async def commit(self, batch: list[Ready]) -> None:
        """Make every side effect of the batch durable, in order, then finish its offsets."""
        async with self._lock:
            held = [item for item in batch if self._held(item)]
            abandoned = len(batch) - len(held)
            for item in batch:
                if not self._held(item):
                    self._release(item)
            decided = self._decide(held)
            settled = await self._fill_unchanged(decided)  # may dead-letter a vanished row
            await self._deliver([self._dead_letter(r) for r in settled if isinstance(r, Rejected)])
            mutations = [m for item in settled if (m := self._mutation(item)) is not None]
            try:
                tokens = await self.sink.write(mutations, self._fenced(held)) if mutations else {}
            except WriteAbandoned as exc:
                # Milvus failed while the partitions were revoked: the next owner redoes the
                # batch; a later retry here could land after its writes.
                self._abandon(batch, exc)
                return
            embedded_at = datetime.now(UTC)  # the writes were acknowledged
            announced = [
                r for item in settled if (r := self._record_state(item, embedded_at, tokens))
            ]
            catalogue = [r for item in settled if (r := self._catalogue_record(item))]
            await self.states.durable()
            await self._deliver(announced + catalogue)
            for item in settled:
                self._finish(item)
            self.finished += len(held)
            self.settled += len(batch)
            metrics.IN_FLIGHT.dec(len(batch))
            if abandoned:
                log.info("abandoned %d events of revoked partitions", abandoned)

    def _fenced(self, held: list[Ready]) -> Callable[[], bool]:
        """True once any partition of ``held`` was revoked."""
        return lambda: not all(self._held(item) for item in held)

    def _abandon(self, batch: list[Ready], exc: Exception) -> None:
        log.warning("batch of %d events abandoned: %s", len(batch), exc)
        for item in batch:
            self._release(item)
        self.settled += len(batch)
        metrics.IN_FLIGHT.dec(len(batch))

    def _release(self, item: Ready | Settled) -> None:
        """Drop the pending version state ``item`` may hold (keyed by its record)."""
        if item.event is not None:
            self.pending.release(item.event.listing_id.encode(), item.record)

    # -- 0: ownership and the version decision --------------------------------------------------

    def _held(self, item: Ready) -> bool:
        record = item.record
        return self.ownership.holds((record.topic, record.partition), record.epoch)

    def _durable(self, key: bytes) -> ListingState | None:
        return ListingState.from_json(self.states.get(key))

    def _decide(self, batch: list[Ready]) -> list[Ready]:
        """Each candidate as :func:`streams.decide.plan` rules on the durable state: written
        as it is, announced again, or skipped."""
        candidates = [
            i
            for i, item in enumerate(batch)
            if isinstance(item, Announce | Delete | Unchanged | Encoded)
        ]
        actions = plan(
            [
                Candidate(
                    item.listing,
                    item.event.version,
                    writable=isinstance(item, Delete | Unchanged | Encoded),
                )
                for item in (batch[i] for i in candidates)
                if isinstance(item, Decoded)
            ],
            self._durable,
        )
        decided = list(batch)
        for index, action in zip(candidates, actions, strict=True):
            item = batch[index]
            assert isinstance(item, Decoded)
            if action is Action.SKIP:
                decided[index] = Skipped(item.record, item.event)
            elif action is Action.ANNOUNCE:
                decided[index] = Announce(item.record, item.event)
        return decided

    async def _fill_unchanged(self, batch: list[Ready]) -> list[Settled]:
        """Reusable rows read back from Milvus (as :class:`Encoded`, ``reused``)."""
        unchanged = [item for item in batch if isinstance(item, Unchanged)]
        if not unchanged:
            return batch  # type: ignore[return-value]
        # Their rows were written by earlier batches: reading as of the newest of those writes
        # sees them all (a state without a token, e.g. from milvus-lite, reads Strong).
        states = [self._durable(item.listing) for item in unchanged]
        tokens = [state.write_token for state in states if state and state.write_token]
        token = max(tokens) if len(tokens) == len(unchanged) else None
        rows = await self.sink.fetch_rows([item.event.listing_id for item in unchanged], token)
        filled: dict[int, Settled] = {}
        missing: list[Unchanged] = []
        for item in unchanged:
            row = rows.get(item.event.listing_id)
            if row is None or row.get("model_version") != self.model_version:
                # Gone, or written by another model: its vectors are in another space.
                missing.append(item)
                continue
            cover = row.get(IMAGE_VECTOR_FIELD)
            vectors = Vectors(
                np.asarray(row["embedding"], dtype=np.float32),
                float(row["mismatch_score"]),
                None if cover is None else np.asarray(cover, dtype=np.float32),
            )
            filled[id(item)] = Encoded(
                item.record, item.event, item.image_sha256, vectors, reused=True
            )
        if missing:
            # The row vanished (another writer, a wiped collection): embed it again.
            for item, redone in zip(missing, await self.reembed(missing), strict=True):
                filled[id(item)] = redone
        return [filled[id(item)] if isinstance(item, Unchanged) else item for item in batch]

    # -- 1: dead letters ------------------------------------------------------------------------

    def _dead_letter(self, item: Rejected) -> _Record:
        record = item.record
        headers = dead_letter_headers(list(record.headers), item.dead_letter)
        return (self.settings.topic_dlq, record.key, record.value, headers)

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

    # -- 2: Milvus ------------------------------------------------------------------------------

    def _mutation(self, item: Settled) -> Mutation | None:
        if isinstance(item, Delete):
            return Mutation(item.event.listing_id, item.event.version, None)
        if not isinstance(item, Encoded):
            return None
        event, vectors = item.event, item.vectors
        assert event.price is not None
        row = {
            "listing_id": event.listing_id,
            "embedding": vectors.embedding.tolist(),
            **(
                {IMAGE_VECTOR_FIELD: vectors.image_vector.tolist()}
                if vectors.image_vector is not None
                else {}
            ),
            "mismatch_score": vectors.mismatch,
            "category": event.category or "",
            "price": float(event.price.amount),
            "currency": event.price.currency,
            "seller_id": event.seller_id or "",
            "version": event.version,
            "model_version": self.model_version,
            "occurred_at_ms": int(event.occurred_at.timestamp() * 1000),
            # The row's own write time; the embedded event's embedded_at follows the ack.
            "updated_at_ms": int(datetime.now(UTC).timestamp() * 1000),
        }
        return Mutation(event.listing_id, event.version, row)

    # -- 3 and 4: version state, embedded events ------------------------------------------------

    def _record_state(
        self, item: Settled, embedded_at: datetime, tokens: dict[str, int]
    ) -> _Record | None:
        """Metrics and the version state of one item; its embedded event, if any."""
        if isinstance(item, Rejected):
            # A dead-lettered version does not count as seen: the row keeps the newest
            # version that could be written, whatever order the events arrived in.
            metrics.EVENTS.labels(outcome="dead_lettered", reason=item.dead_letter.reason).inc()
            return None
        if isinstance(item, Skipped):
            metrics.EVENTS.labels(outcome="skipped_stale", reason="").inc()
            return None
        event = item.event
        key = item.listing
        mismatch: float | None
        if isinstance(item, Announce):
            state = self._durable(key)
            assert state is not None and state.version == event.version
            outcome = Outcome(state.outcome or (Outcome.DELETED if state.deleted else "embedded"))
            mismatch, token = state.mismatch, state.write_token
            metrics.EVENTS.labels(outcome="announced_again", reason="").inc()
        else:
            if isinstance(item, Delete):
                outcome, mismatch, sha = Outcome.DELETED, None, None
            else:
                outcome = Outcome.UNCHANGED if item.reused else Outcome.EMBEDDED
                mismatch, sha = item.vectors.mismatch, item.image_sha256
            token = tokens.get(event.listing_id)
            self.states[key] = guard.after_write(
                event, sha, outcome=outcome.value, mismatch=mismatch, write_token=token
            ).to_json()
            metrics.EVENTS.labels(outcome=outcome.value, reason="").inc()
            if mismatch is not None:
                metrics.MISMATCH.labels(model_version=self.model_version).observe(mismatch)
        if outcome is not Outcome.DELETED and mismatch is None:
            mismatch = 0.0  # a state written before scores were kept; the contract needs one
        fresh = freshness_seconds(event.occurred_at, embedded_at)
        metrics.FRESHNESS.labels(outcome=outcome.value).observe(fresh)
        embedded = EmbeddedEvent(
            event_id=event.event_id,
            listing_id=event.listing_id,
            version=event.version,
            outcome=outcome,
            model_version=self.model_version,
            mismatch_score=None if outcome is Outcome.DELETED else mismatch,
            occurred_at=event.occurred_at,
            embedded_at=embedded_at,
            freshness_seconds=fresh,
            write_token=token,
        )
        return (self.settings.topic_embedded, key, encode(embedded), [])

    def _catalogue_record(self, item: Settled) -> _Record | None:
        """The state topic's record of a listing whose row is durable (after
        :meth:`_record_state` settled it): its fields, or a tombstone."""
        if isinstance(item, Rejected | Skipped):
            return None
        event = item.event
        key = item.listing
        if isinstance(item, Delete):
            return (self.settings.topic_state, key, None, [])
        if isinstance(item, Announce):
            state = self._durable(key)
            if state is None or state.deleted:
                return (self.settings.topic_state, key, None, [])
            sha256 = state.image_sha256
        else:
            sha256 = item.image_sha256
        if sha256 is None or event.cover_url is None or event.price is None:
            return None  # a state from before covers were hashed: nothing to re-embed from
        entry = CatalogueEntry(
            listing_id=event.listing_id,
            version=event.version,
            occurred_at=event.occurred_at,
            title=event.title or "",
            cover_url=event.cover_url,
            cover_sha256=sha256,
            category=event.category or "",
            price=event.price,
            seller_id=event.seller_id or "",
            marketplace=event.marketplace or "",
            event_id=event.event_id,
        )
        return (self.settings.topic_state, key, encode(entry), [])

    # -- 5: offsets -----------------------------------------------------------------------------

    def _finish(self, item: Settled) -> None:
        self._release(item)
        record = item.record
        self.ledger.finish(record.topic, record.partition, record.offset)
