"""Recall over Kafka: the request-reply worker and the client library downstream services use.

``RecallClient`` / ``AsyncRecallClient`` send requests to ``recall.requests`` and wait for the
reply on their own reply topic; ``RecallWorker`` (``vitrine recall``) answers them with one
batched Milvus search per group of compatible requests. See docs/recall.md.
"""

from .client import AsyncRecallClient, RecallClient
from .errors import (
    InvalidQuery,
    RecallBackpressure,
    RecallClosed,
    RecallError,
    RecallTimeout,
    SearchFailed,
)
from .router import ClientStats
from .settings import RecallSettings

__all__ = [
    "AsyncRecallClient",
    "ClientStats",
    "InvalidQuery",
    "RecallBackpressure",
    "RecallClient",
    "RecallClosed",
    "RecallError",
    "RecallSettings",
    "RecallTimeout",
    "SearchFailed",
]
