"""Typed settings shared by every Caliber process.

Each service builds one settings object at its entry point (``Settings()``) and passes it,
or the parts it needs, to library code. Library code never reads the environment itself.
Every variable carries the ``CALIBER_`` prefix; the README's configuration table lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_POSTGRES_PORT = 15432
DEFAULT_KAFKA_CLUSTER_PORT = 19192
DEFAULT_REDIS_CLUSTER_PORT = 17001
CLUSTER_NODES = 3
"""Nodes of the local clusters: three Kafka brokers (each also a controller voter) and three
Redis Cluster masters."""
LONGEST_METRIC_WINDOW_SECONDS = 7 * 24 * 3600
"""The longest rolling window the API answers (``7d``); ``all`` is kept by day buckets."""

WORKER_METRICS_PORTS = {
    "ingest": 9101,
    "policy": 9102,
    "aggregator": 9103,
    "drift": 9104,
    "recorder": 9105,
    "calibrator": 9106,
    "router": 9107,
}
"""Default /metrics port of each worker: its settings' default, and where tools that did not
start it (the demo) look for it."""


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
    stack_profile: Literal["single", "cluster"] = Field(
        default="single",
        description="local stack: 'single' (one Kafka broker, one Redis) or 'cluster' (a "
        "3-broker Kafka KRaft cluster and a 3-master Redis Cluster on loopback, and the "
        "database caliber_cluster on the same PostgreSQL)",
    )
    kafka_cluster_port: int = Field(
        default=DEFAULT_KAFKA_CLUSTER_PORT,
        ge=1,
        le=65_000,
        description="cluster profile: client port of the first Kafka broker; broker n listens "
        "on this port + n - 1 and its controller on this port + 2 + n",
    )
    redis_cluster_port: int = Field(
        default=DEFAULT_REDIS_CLUSTER_PORT,
        ge=1,
        le=55_000,
        description="cluster profile: port of the first Redis Cluster master; master n on this "
        "port + n - 1 (cluster bus: + 10000)",
    )
    topic_replication_factor: int | None = Field(
        default=None,
        ge=1,
        description="replication factor of created topics; unset = min(3, live brokers)",
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
    route_half_life_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="routing: an outcome's weight halves every this many seconds of event time "
        "(the router worker writes with it, the gateway decides with it)",
    )
    segment_max_per_version: int = Field(
        default=1_000,
        ge=1,
        description="most calibration segments of one model version under one segment key "
        "(the aggregator keeps state and the policy keeps maps for at most this many; later "
        "segments fall back)",
    )
    limit_batch_events: int = Field(
        default=10_000, ge=1, description="most events in one batch message on Kafka"
    )
    limit_request_events: int = Field(
        default=10_000, ge=1, description="most events in one REST request"
    )
    limit_classes: int = Field(
        default=1_000, ge=1, description="most entries of a probability or logit vector"
    )
    limit_features: int = Field(default=256, ge=1, description="most features of one event")
    limit_string_chars: int = Field(
        default=256,
        ge=1,
        description="most characters of an id, name, version, label, ground truth, feature "
        "name, category value or metadata key",
    )
    limit_metadata_entries: int = Field(
        default=32, ge=0, description="most metadata entries of one event"
    )
    limit_metadata_value_chars: int = Field(
        default=1_024, ge=1, description="most characters of one metadata value"
    )
    limit_event_age_seconds: int = Field(
        default=730 * 86_400, ge=60, description="oldest accepted event or label time (age)"
    )
    limit_clock_skew_seconds: int = Field(
        default=300, ge=0, description="latest accepted event or label time (ahead of now)"
    )
    quarantine_after_crashes: int = Field(
        default=3,
        ge=1,
        description="a message on which a worker crashed this many times in a row at the same "
        "offset is dead-lettered with code worker_crash",
    )
    idle_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="how long a worker's fetch waits while its input is empty; a message that "
        "arrives ends the wait at once, so this costs no latency, only wake-ups (and is how "
        "long a stop may wait)",
    )
    linger_max_seconds: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="longest a throughput-bound worker (not the policy) waits to fill its next "
        "batch; it waits as long as its last batch took to process, so batches grow with the "
        "load and a light load waits milliseconds",
    )
    batch_linger_seconds: float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="how long a worker off the decision path (aggregator, drift, recorder, "
        "router, calibrator) gathers its input before one iteration; "
        "every iteration costs a commit, Redis and PostgreSQL round trips and one write per "
        "touched counter, so its batches, not the events, set the cost; the least it "
        "gathers, and what a light load adds to metric freshness",
    )
    batch_linger_max_seconds: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="the most a worker off the decision path gathers its input: it gathers "
        "twice as long as its last iteration took, from CALIBER_BATCH_LINGER_SECONDS up to "
        "this, so under load its batches grow and its fixed cost per event shrinks, and a "
        "light load keeps the short linger",
    )
    redis_nice: int = Field(
        default=0,
        ge=-20,
        le=0,
        description="the niceness the local stack's Redis runs at (every thread). Redis "
        "answers ingest's duplicate claims and every worker's crash records one command at a "
        "time, so when it loses its core in the middle of a metrics script a decision waits: "
        "below 0 shortens the decision tail at low rates, but near the machine's limit it "
        "also puts the metrics work done inside Redis before the decision path. Below 0 "
        "needs root (or CAP_SYS_NICE)",
    )
    background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how much lower a worker off the decision path (aggregator, drift, "
        "recorder, router, calibrator) runs in the CPU scheduler (a nice value added to every "
        "thread); when the cores are busy, ingest, the policy and Kafka run first, so a "
        "decision does not wait behind a metrics batch; 0: the same priority as the others",
    )
    kafka_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="longest the broker holds a consumer's fetch while a partition has nothing "
        "new (fetch.wait.max.ms); new records answer the fetch at once, but an offset commit "
        "on the same connection waits behind a held fetch",
    )
    kafka_batch_fetch_wait_ms: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="fetch.wait.max.ms of the workers off the decision path (aggregator, "
        "drift, recorder, router, calibrator): at rest each of them asks the broker this "
        "often; while records flow their fetches are answered at once or skipped for the "
        "linger, so a longer wait costs them no freshness",
    )
    fault_inject: str = Field(
        default="",
        description="TESTS ONLY: '<service>:<marker>' makes that worker crash on every message "
        "whose bytes contain the marker (empty: off)",
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
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address a worker's /metrics listens on (0.0.0.0 in docker-compose.yml, "
        "so Prometheus in its own container can scrape it)",
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
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        if self.stack_profile == "cluster":
            ports = range(self.kafka_cluster_port, self.kafka_cluster_port + CLUSTER_NODES)
            return ",".join(f"127.0.0.1:{port}" for port in ports)
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def internal_replication_factor(self) -> int:
        """Replication of topics a library creates by itself (Faust's), where no broker count
        is at hand: the setting, else three copies on the cluster profile and one otherwise."""
        if self.topic_replication_factor is not None:
            return self.topic_replication_factor
        return CLUSTER_NODES if self.stack_profile == "cluster" else 1

    @property
    def redis_dsn(self) -> str:
        if self.redis_url:
            return self.redis_url
        if self.stack_profile == "cluster":
            return f"redis+cluster://127.0.0.1:{self.redis_cluster_port}"
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def postgres_database(self) -> str:
        """The local stack's database: each profile has its own, on the one server, so the
        stack identity of one profile's Kafka never meets the other's database."""
        return "caliber_cluster" if self.stack_profile == "cluster" else "caliber"

    @property
    def postgres_url(self) -> str:
        if self.postgres_dsn is not None:
            return self.postgres_dsn.get_secret_value()
        return (
            f"postgresql://caliber:caliber@127.0.0.1:{self.postgres_port}/{self.postgres_database}"
        )

    @property
    def logs_dir(self) -> Path:
        return self.stack_home / "logs"


class GatewayAddress(Settings):
    """Where the gateway listens: part of the gateway's settings, and what a client that
    started it (the demo) reads to find it."""

    gateway_host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="gateway HTTP port")
