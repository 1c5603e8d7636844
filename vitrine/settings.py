"""Settings shared by every Vitrine service.

Each service has exactly one frozen settings object (``InfraSettings`` here,
``EmbedderSettings`` in ``streams``, ``RecallSettings`` in ``recall``) built from, in order of
precedence: explicit arguments, ``VITRINE_*`` environment variables, an optional TOML file named
by ``VITRINE_CONFIG``, then defaults. :func:`load` turns validation failures into one
:class:`~vitrine.errors.ConfigError` that names each bad variable and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from vitrine.errors import ConfigError

ENV_PREFIX = "VITRINE_"
CONFIG_FILE_ENV = "VITRINE_CONFIG"


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitrine"


class VitrineSettings(BaseSettings):
    """Fields every service needs: where Kafka and Milvus are, topic names, local state."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(
        default_factory=_default_home,
        description="Local state: Kafka jars cache, broker logs, milvus-lite data, pid files.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Downloads (Kafka jars, Maven repository). Unset: VITRINE_HOME/cache.",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Existing Kafka bootstrap servers (host:port,...). Unset: the local broker "
        "that `vitrine infra up` manages, on 127.0.0.1:VITRINE_KAFKA_PORT.",
    )
    kafka_port: int = Field(default=19092, ge=1024, le=65535, description="Local broker port.")
    kafka_controller_port: int = Field(
        default=19093, ge=1024, le=65535, description="Local KRaft controller port."
    )
    kafka_version: str = Field(
        default="4.1.1", pattern=r"^\d+\.\d+\.\d+$", description="Apache Kafka release to run."
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus endpoint (http://host:19530). Unset: the local milvus-lite server "
        "that `vitrine infra up` manages, on 127.0.0.1:VITRINE_MILVUS_PORT.",
    )
    milvus_token: str = Field(default="", description="Milvus token (user:password), if any.")
    milvus_port: int = Field(default=19540, ge=1024, le=65535, description="milvus-lite port.")
    milvus_collection: str = Field(
        default="listings",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        description="Collection holding listing embeddings.",
    )
    topic_events: str = Field(default="listings.events", description="Listing events topic.")
    topic_embedded: str = Field(default="listings.embedded", description="Embedded events.")
    topic_dlq: str = Field(default="listings.events.dlq", description="Dead letters.")
    topic_recall_requests: str = Field(default="recall.requests", description="Recall requests.")
    topic_recall_replies: str = Field(default="recall.replies", description="Default replies.")
    topic_partitions: int = Field(default=4, ge=1, le=1024, description="Partitions per topic.")
    topic_replication: int = Field(default=1, ge=1, le=16, description="Replication factor.")
    topic_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="Retention of the data topics (ms)."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port of this process's /metrics; 0 = off."
    )

    topic_fields: ClassVar[tuple[str, ...]] = (
        "topic_events",
        "topic_embedded",
        "topic_dlq",
        "topic_recall_requests",
        "topic_recall_replies",
    )

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @field_validator(
        "topic_events",
        "topic_embedded",
        "topic_dlq",
        "topic_recall_requests",
        "topic_recall_replies",
    )
    @classmethod
    def _topic_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value) or value in {".", ".."}:
            raise ValueError("Kafka topic names use 1-249 of [A-Za-z0-9._-]")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        for part in value.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("expected host:port[,host:port...]")
        return value.strip()

    @field_validator("milvus_uri")
    @classmethod
    def _milvus_uri(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://", "tcp://")):
            raise ValueError("expected http://host:port or https://host:port")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    # -- derived values ---------------------------------------------------------------------

    @property
    def cache(self) -> Path:
        """Where downloads are kept; shared by homes that point at the same cache."""
        return self.cache_dir or self.home / "cache"

    @property
    def manages_kafka(self) -> bool:
        """True when Vitrine runs the broker itself (no external bootstrap configured)."""
        return self.kafka_bootstrap is None

    @property
    def manages_milvus(self) -> bool:
        """True when Vitrine runs milvus-lite itself (no external Milvus configured)."""
        return self.milvus_uri is None

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka bootstrap servers to connect to."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def milvus_endpoint(self) -> str:
        """The Milvus URI to connect to."""
        return self.milvus_uri or f"http://127.0.0.1:{self.milvus_port}"

    @property
    def topics(self) -> dict[str, str]:
        """Logical role -> topic name."""
        return {field.removeprefix("topic_"): getattr(self, field) for field in self.topic_fields}


class InfraSettings(VitrineSettings):
    """Settings of `vitrine infra` and `vitrine topics`."""

    infra_start_timeout_s: float = Field(
        default=90.0, gt=0, le=900, description="How long to wait for a service to answer."
    )


S = TypeVar("S", bound=VitrineSettings)


def describe_error(exc: ValidationError, settings_cls: type[BaseSettings]) -> str:
    """Render a pydantic validation error as one line per bad ``VITRINE_*`` variable."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        # A check across several fields has no location; its message names the variables.
        env = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{env}: {err['msg']}{shown}")
    return f"invalid {settings_cls.__name__}:\n  " + "\n  ".join(lines)


def load(settings_cls: type[S], **overrides: Any) -> S:
    """Build and validate ``settings_cls``; raise :class:`ConfigError` naming bad variables."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}: no such file {config_file!r}")
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, settings_cls)) from exc
