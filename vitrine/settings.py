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
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from vitrine.errors import ConfigError

ENV_PREFIX = "VITRINE_"
#: Port distance between two nodes of the local Kafka cluster.
NODE_PORT_STEP = 10
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
    kafka_brokers: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Brokers of the local Kafka cluster `vitrine infra up` runs (KRaft, each "
        "node broker and controller). Node i listens on VITRINE_KAFKA_PORT + 10*i and "
        "VITRINE_KAFKA_CONTROLLER_PORT + 10*i. 3 gives topics replication 3, min.insync 2.",
    )
    kafka_version: str = Field(
        default="4.1.1", pattern=r"^\d+\.\d+\.\d+$", description="Apache Kafka release to run."
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus endpoint (http://host:19530). Unset: the local Milvus "
        "(VITRINE_MILVUS_KIND) that `vitrine infra up` manages, on 127.0.0.1:VITRINE_MILVUS_PORT.",
    )
    milvus_kind: Literal["lite", "server"] = Field(
        default="lite",
        description="What `vitrine infra up` runs when VITRINE_MILVUS_URI is unset: `lite` "
        "(milvus-lite, embedded default) or `server` (Milvus standalone from the `milvus` "
        "package: embedded etcd, local storage, HNSW, real consistency levels).",
    )
    milvus_token: str = Field(default="", description="Milvus token (user:password), if any.")
    milvus_port: int = Field(
        default=19540,
        ge=1024,
        le=65525,
        description="Port of the local Milvus (the server kind also uses the next 10 ports).",
    )
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
    topic_state: str = Field(
        default="listings.state",
        description="The catalogue's state: latest valid version of each live listing "
        "(compacted, key = listing_id, tombstone on delete).",
    )
    topic_control: str = Field(
        default="vitrine.control",
        description="Control records (compacted, one partition): the live collection pointer "
        "and the model rollout.",
    )
    topic_partitions: int = Field(default=4, ge=1, le=1024, description="Partitions per topic.")
    topic_replication: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Replication factor. Unset: the number of local brokers, at most 3 "
        "(1 for an external cluster: set it there).",
    )
    topic_min_insync_replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="min.insync.replicas of Vitrine's topics: acks=all writes fail rather than "
        "live on fewer copies. Unset: replication - 1, at least 1, at most 2.",
    )
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
        "topic_state",
        "topic_control",
    )

    @model_validator(mode="before")
    @classmethod
    def _replication_defaults(cls, data: Any) -> Any:
        # Defaults that follow the cluster size; explicit values always win.
        if not isinstance(data, dict):
            return data
        try:
            brokers = int(data.get("kafka_brokers", 1))
        except (TypeError, ValueError):
            return data  # the field validator reports it
        external = data.get("kafka_bootstrap") not in (None, "")
        if data.get("topic_replication") in (None, ""):
            data["topic_replication"] = 1 if external else min(brokers, 3)
        if data.get("topic_min_insync_replicas") in (None, ""):
            try:
                replication = int(data["topic_replication"])
            except (TypeError, ValueError):
                return data
            data["topic_min_insync_replicas"] = max(1, min(2, replication - 1))
        return data

    @model_validator(mode="after")
    def _replication_fits(self) -> VitrineSettings:
        if self.topic_min_insync_replicas > self.topic_replication:
            raise ValueError(
                "VITRINE_TOPIC_MIN_INSYNC_REPLICAS must not exceed VITRINE_TOPIC_REPLICATION"
            )
        if self.manages_kafka and self.topic_replication > self.kafka_brokers:
            raise ValueError(
                "VITRINE_TOPIC_REPLICATION exceeds VITRINE_KAFKA_BROKERS (the local cluster)"
            )
        return self

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
        "topic_state",
        "topic_control",
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
        """True when Vitrine runs Milvus itself (no external Milvus configured)."""
        return self.milvus_uri is None

    @property
    def milvus_is_lite(self) -> bool:
        """True when the endpoint is the local milvus-lite server (FLAT and IVF_FLAT only)."""
        return self.manages_milvus and self.milvus_kind == "lite"

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka bootstrap servers to connect to."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"127.0.0.1:{port}" for port, _ in self.kafka_node_ports)

    @property
    def kafka_node_ports(self) -> list[tuple[int, int]]:
        """(broker port, controller port) of each local Kafka node, node 1 first."""
        return [
            (self.kafka_port + NODE_PORT_STEP * i, self.kafka_controller_port + NODE_PORT_STEP * i)
            for i in range(self.kafka_brokers)
        ]

    @property
    def milvus_endpoint(self) -> str:
        """The Milvus URI to connect to."""
        return self.milvus_uri or f"http://127.0.0.1:{self.milvus_port}"

    @classmethod
    def names_for(cls, prefix: str) -> dict[str, str]:
        """A collection and every topic named after ``prefix``: the settings of a deployment (a
        test, a benchmark, a staging copy) that shares a broker and a Milvus with others but
        not their data. Covers every topic role, so a role added later is never shared."""
        topics = {field: f"{prefix}.{field.removeprefix('topic_')}" for field in cls.topic_fields}
        return {"milvus_collection": prefix, **topics}

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
