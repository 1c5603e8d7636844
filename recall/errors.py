"""Errors of the recall worker and client; every one carries a stable ``reason``."""

from __future__ import annotations

from vitrine.errors import VitrineError


class RecallError(VitrineError):
    """Root of recall errors."""

    reason = "recall_error"


class InvalidQuery(RecallError):
    """A request passed its schema but cannot be answered as asked (answered ``invalid``)."""

    reason = "invalid_query"


class SearchFailed(RecallError):
    """Milvus refused or failed a search or a lookup (answered ``error``)."""

    reason = "search_failed"


class EmbeddingFailed(RecallError):
    """A text or photo query could not be embedded by the model (answered ``error``)."""

    reason = "embedding_failed"


class RecallTimeout(RecallError):
    """No reply arrived before the request's deadline."""

    reason = "timeout"


class RecallBackpressure(RecallError):
    """The client already waits for ``max_pending`` replies, or its producer queue is full."""

    reason = "backpressure"


class RecallClosed(RecallError):
    """The client was closed while a request was waiting or being sent."""

    reason = "client_closed"
