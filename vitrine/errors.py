"""The one exception root of Vitrine.

Every error that can reach a dead letter, an error reply or a CLI exit carries a stable,
machine-readable ``reason`` (snake_case). Subpackages define their own subclasses in their own
``errors.py``; vendor exceptions are translated with ``raise ... from exc``.
"""

from __future__ import annotations


class VitrineError(Exception):
    """Root of every error Vitrine raises on purpose.

    ``reason`` is a stable code meant for machines (dead-letter headers, reply payloads,
    metrics labels); the message is for people.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class ConfigError(VitrineError):
    """A setting is missing or invalid; the message names the variable and what is allowed."""

    reason = "invalid_config"


class InfraError(VitrineError):
    """A local broker or vector store could not be fetched, started, reached or stopped."""

    reason = "infra_unavailable"


class MetricsPortInUse(InfraError):
    """The /metrics port is taken by another process."""

    reason = "metrics_port_in_use"


class BrokerUnavailable(InfraError):
    """The Kafka bootstrap servers did not answer in time."""

    reason = "broker_unavailable"
