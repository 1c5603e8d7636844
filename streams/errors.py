"""Errors of the embedder. Each has a stable ``reason`` for dead-letter headers and metrics."""

from __future__ import annotations

from vitrine.errors import VitrineError


class EmbedderError(VitrineError):
    """Root of the errors raised by :mod:`streams`."""

    reason = "embedder_error"


class FetchError(EmbedderError):
    """A cover image could not be fetched.

    Reasons: ``bad_url``, ``forbidden_address``, ``unresolvable_host``, ``not_found``,
    ``http_error`` (other 4xx), ``too_large``, ``too_many_redirects``, ``server_error``,
    ``timeout``, ``connection_failed``. ``transient`` ones are retried with backoff and
    dead-lettered only when the attempts run out.
    """

    reason = "fetch_failed"

    def __init__(self, message: str, *, reason: str, transient: bool = False) -> None:
        super().__init__(message, reason=reason)
        self.transient = transient


class WriteAbandoned(EmbedderError):
    """A Milvus write that kept failing was given up: the batch's partitions were revoked (or
    the process is stopping), so retrying could land after the partitions' next owner wrote."""

    reason = "write_abandoned"
