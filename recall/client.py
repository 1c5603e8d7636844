"""The recall client library: ``RecallClient`` (blocking) and ``AsyncRecallClient`` (asyncio).

Reply routing: by default each client instance creates its own single-partition reply topic
(``<replies topic>.<random hex>``) with the AdminClient when it starts and deletes it when it
closes, so it receives only its own replies without any coordination between instances. A
deployment that prefers fixed topics can pin ``reply_topic`` + ``reply_partition`` instead (the
Spring Kafka way); it must then give every instance its own partition.

Requests carry a deadline; the caller gets the reply or :class:`RecallTimeout` at that deadline,
exactly one of the two. Replies that arrive later, or that this instance never asked for, are
dropped and counted. The map of waiting requests is bounded: beyond ``max_pending`` a call
fails at once with :class:`RecallBackpressure`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas import RecallFilters, RecallQuery, RecallReply, RecallRequest, limits

from .errors import InvalidQuery
from .router import ClientStats, ReplyRouter
from .settings import RecallSettings

log = logging.getLogger(__name__)

FiltersArg = RecallFilters | Mapping[str, Any] | None


def _retrieve(waiter: asyncio.Future[RecallReply]) -> None:
    # Nobody awaits a cancelled call's future; read its outcome so asyncio does not warn.
    if not waiter.cancelled():
        waiter.exception()


def build_request(
    *,
    listing_id: str | None = None,
    vector: Sequence[float] | None = None,
    text: str | None = None,
    image: bytes | None = None,
    k: int,
    filters: FiltersArg,
    timeout_s: float,
    write_token: int | None = None,
) -> RecallRequest:
    """A validated request with a fresh request_id and a deadline ``timeout_s`` from now.

    ``image`` is the photo's file bytes; over :data:`schemas.limits.MAX_QUERY_IMAGE_BYTES` it is
    refused here (reason ``too_large``) rather than sent.
    """
    if image is not None and len(image) > limits.MAX_QUERY_IMAGE_BYTES:
        raise InvalidQuery(
            f"photo is {len(image)} bytes; at most {limits.MAX_QUERY_IMAGE_BYTES} are accepted",
            reason="too_large",
        )
    try:
        query = RecallQuery(
            listing_id=listing_id,
            vector=tuple(vector) if vector is not None else None,
            text=text,
            image=base64.b64encode(image).decode("ascii") if image is not None else None,
        )
        if filters is not None and not isinstance(filters, RecallFilters):
            filters = RecallFilters.model_validate(dict(filters))
        return RecallRequest(
            request_id=uuid.uuid4().hex,
            query=query,
            k=k,
            filters=filters,
            deadline=datetime.now(UTC) + timedelta(seconds=timeout_s),
            write_token=write_token,
        )
    except ValidationError as exc:
        raise InvalidQuery(f"invalid recall request: {exc}", reason="invalid_request") from exc


class _ClientBase:
    def __init__(
        self,
        settings: RecallSettings | None = None,
        *,
        reply_topic: str | None = None,
        reply_partition: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        from vitrine.settings import load

        self.settings = settings or load(RecallSettings)
        self._router = ReplyRouter(self.settings, reply_topic, reply_partition, max_pending)

    @property
    def reply_topic(self) -> str:
        """The topic this instance's replies arrive on."""
        return self._router.route_topic

    @property
    def reply_partition(self) -> int | None:
        """The partition this instance's replies arrive on."""
        return self._router.route_partition

    @property
    def stats(self) -> ClientStats:
        """A snapshot of this instance's counters, with the current pending count."""
        return self._router.snapshot()

    def _timeout(self, timeout: float | None) -> float:
        value = self.settings.recall_client_timeout_s if timeout is None else timeout
        if value <= 0:
            raise InvalidQuery("timeout must be positive", reason="invalid_request")
        return value


class RecallClient(_ClientBase):
    """Blocking recall client; thread-safe, one instance per process is enough.

    ``similar`` and ``similar_to_vector`` return the worker's :class:`~schemas.RecallReply`
    (check ``status``: ok, not_found, expired, invalid or error) or raise
    :class:`RecallTimeout` when no reply arrives within ``timeout`` seconds.
    """

    def similar(
        self,
        listing_id: str,
        k: int = 10,
        filters: FiltersArg = None,
        timeout: float | None = None,
        write_token: int | None = None,
    ) -> RecallReply:
        """Items like the indexed listing ``listing_id`` (the listing itself excluded).

        ``write_token``: the ``write_token`` of an embedded event; the answer then includes
        that write (read your writes), at the cost of waiting for it on a Milvus server.
        """
        timeout_s = self._timeout(timeout)
        request = build_request(
            listing_id=listing_id,
            k=k,
            filters=filters,
            timeout_s=timeout_s,
            write_token=write_token,
        )
        return self.send(request, timeout_s, key=listing_id.encode())

    def similar_to_vector(
        self,
        vector: Sequence[float],
        k: int = 10,
        filters: FiltersArg = None,
        timeout: float | None = None,
        write_token: int | None = None,
    ) -> RecallReply:
        """Items closest to ``vector`` (of the index's dimension); ``write_token`` as for
        ``similar``."""
        timeout_s = self._timeout(timeout)
        request = build_request(
            vector=vector, k=k, filters=filters, timeout_s=timeout_s, write_token=write_token
        )
        return self.send(request, timeout_s)

    def search_text(
        self, text: str, k: int = 10, filters: FiltersArg = None, timeout: float | None = None
    ) -> RecallReply:
        """Listings whose cover photos match the phrase ``text`` (the model's shared
        image-title space); blank text is answered ``invalid`` / ``empty_text``."""
        timeout_s = self._timeout(timeout)
        request = build_request(text=text, k=k, filters=filters, timeout_s=timeout_s)
        return self.send(request, timeout_s)

    def similar_to_image(
        self, image: bytes, k: int = 10, filters: FiltersArg = None, timeout: float | None = None
    ) -> RecallReply:
        """Listings whose cover photos look like ``image`` (JPEG, PNG, WebP or GIF bytes);
        bytes that are no image are answered ``invalid`` / ``not_an_image``."""
        timeout_s = self._timeout(timeout)
        request = build_request(image=image, k=k, filters=filters, timeout_s=timeout_s)
        return self.send(request, timeout_s)

    def send(
        self, request: RecallRequest, timeout_s: float, key: bytes | None = None
    ) -> RecallReply:
        """Send a ready-made request and wait up to ``timeout_s`` for its reply."""
        correlation_id, future = self._router.submit(request, key)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            self._router.expire(correlation_id)
            return future.result(timeout=0)  # the reply, if it won the race; else RecallTimeout

    def close(self) -> None:
        """Fail waiting calls with RecallClosed, stop the reply thread, delete an own topic."""
        self._router.close()

    def __enter__(self) -> RecallClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRecallClient(_ClientBase):
    """asyncio recall client: the same behaviour as :class:`RecallClient`, awaitable.

    Construction and :meth:`close` block briefly (topic creation and the client's warm-up,
    ~0.6 s; topic deletion): construct it at start-up or with
    ``await asyncio.to_thread(AsyncRecallClient, settings)``; :meth:`aclose` (and leaving
    ``async with``) closes it off the loop.
    """

    async def similar(
        self,
        listing_id: str,
        k: int = 10,
        filters: FiltersArg = None,
        timeout: float | None = None,
        write_token: int | None = None,
    ) -> RecallReply:
        """Items like the indexed listing ``listing_id`` (see :meth:`RecallClient.similar`)."""
        timeout_s = self._timeout(timeout)
        request = build_request(
            listing_id=listing_id,
            k=k,
            filters=filters,
            timeout_s=timeout_s,
            write_token=write_token,
        )
        return await self.send(request, timeout_s, key=listing_id.encode())

    async def similar_to_vector(
        self,
        vector: Sequence[float],
        k: int = 10,
        filters: FiltersArg = None,
        timeout: float | None = None,
        write_token: int | None = None,
    ) -> RecallReply:
        """Items closest to ``vector`` (of the index's dimension); ``write_token`` as for
        ``similar``."""
        timeout_s = self._timeout(timeout)
        request = build_request(
            vector=vector, k=k, filters=filters, timeout_s=timeout_s, write_token=write_token
        )
        return await self.send(request, timeout_s)

    async def search_text(
        self, text: str, k: int = 10, filters: FiltersArg = None, timeout: float | None = None
    ) -> RecallReply:
        """Listings whose cover photos match ``text`` (see :meth:`RecallClient.search_text`)."""
        timeout_s = self._timeout(timeout)
        request = build_request(text=text, k=k, filters=filters, timeout_s=timeout_s)
        return await self.send(request, timeout_s)

    async def similar_to_image(
        self, image: bytes, k: int = 10, filters: FiltersArg = None, timeout: float | None = None
    ) -> RecallReply:
        """Listings whose covers look like ``image`` (see :meth:`RecallClient.similar_to_image`)."""
        timeout_s = self._timeout(timeout)
        request = build_request(image=image, k=k, filters=filters, timeout_s=timeout_s)
        return await self.send(request, timeout_s)

    async def send(
        self, request: RecallRequest, timeout_s: float, key: bytes | None = None
    ) -> RecallReply:
        """Send a ready-made request and wait up to ``timeout_s`` for its reply."""
        correlation_id, future = self._router.submit(request, key)
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
        except asyncio.CancelledError:
            self._router.expire(correlation_id)
            waiter.add_done_callback(_retrieve)
            raise
        if waiter not in done:
            # Settles the future with RecallTimeout, unless the reply won the race.
            self._router.expire(correlation_id)
        return await waiter

    async def aclose(self) -> None:
        """:meth:`RecallClient.close`, off the event loop."""
        await asyncio.to_thread(self._router.close)

    def close(self) -> None:
        """Blocking close."""
        self._router.close()

    async def __aenter__(self) -> AsyncRecallClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
