"""Typed settings shared by every Caliber process.

Each service builds one settings object at its entry point (``Settings()``) and passes it,
or the parts it needs, to library code. Library code never reads the environment itself.
Every variable carries the ``CALIBER_`` prefix; the README's configuration table lists them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_POSTGRES_PORT = 15432
LONGEST_METRIC_WINDOW_SECONDS = 7 * 24 * 3600
"""The longest rolling window the API answers (``7d``); ``all`` is kept by day buckets."""


class Settings(BaseSettings):
    """Connection and runtime settings common to all services.

    A connection value left unset means "the local stack that ``caliber stack up`` runs";
    setting it points Caliber at an existing server and the stack manager leaves that
    server alone.
    """

    model_config = SettingsConfigDict(env_prefix="CALIBER_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = the local stack's broker"
    )
    redis_url: str | None = Field(default=None, description="Redis URL; unset = local stack")
    postgres_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN (postgresql://…); unset = local stack"
    )

    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, description="local stack Kafka port")
    redis_port: int = Field(default=DEFAULT_REDIS_PORT, description="local stack Redis port")
    postgres_port: int = Field(
        default=DEFAULT_POSTGRES_PORT, description="local stack PostgreSQL port"
    )
    stack_home: Path = Field(
        default=Path.home() / ".cache" / "caliber",
        description="where the local stack keeps binaries, data and logs (logs/ inside)",
    )

    topic_namespace: str = Field(
        default="caliber", description="prefix of every topic name: <ns>.inference.raw, …"
    )
    topic_partitions: int = Field(default=6, ge=1, description="partitions of created topics")
    redis_prefix: str = Field(default="caliber:", description="prefix of every Redis key")

    batch_max_events: int = Field(
        default=500, ge=1, description="events per columnar batch message between workers"
    )
    label_horizon_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="how long a label may trail its prediction; dedupe and join state TTL",
    )
    topic_retention_seconds: int = Field(
        default=15 * 24 * 3600,
        ge=3600,
        description="how long Kafka keeps every record of a non-compacted topic; at least the "
        "longest metric window (7 d) plus the label horizon, so Redis and PostgreSQL can be "
        "rebuilt from the log",
    )
    metrics_port: int = Field(
        default=0, ge=0, description="Prometheus /metrics port of a worker (0 = none)"
    )
    log_level: str = Field(default="INFO", description="log level of every service")
    instance_id: str = Field(
        default="0",
        description="replica id of a worker; keep it stable across restarts and distinct "
        "between replicas (it names the Kafka transactional id)",
    )

    @model_validator(mode="after")
    def _retention_covers_a_rebuild(self) -> Settings:
        needed = LONGEST_METRIC_WINDOW_SECONDS + self.label_horizon_seconds
        if self.topic_retention_seconds < needed:
            raise ValueError(
                f"CALIBER_TOPIC_RETENTION_SECONDS={self.topic_retention_seconds} is too short: "
                f"expected at least {needed} (the 7-day metric window plus "
                f"CALIBER_LABEL_HORIZON_SECONDS={self.label_horizon_seconds}), or a lost store "
                "could no longer be rebuilt from Kafka"
            )
        return self

    @property
    def kafka_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def postgres_url(self) -> str:
        if self.postgres_dsn is not None:
            return self.postgres_dsn.get_secret_value()
        return f"postgresql://caliber:caliber@127.0.0.1:{self.postgres_port}/caliber"

    @property
    def logs_dir(self) -> Path:
        return self.stack_home / "logs"
