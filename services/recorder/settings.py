"""Settings of the recorder (``CALIBER_`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, Settings


class RecorderSettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["recorder"],
        ge=0,
        description="recorder /metrics port (0 = none)",
    )
    recorder_max_messages: int = Field(
        default=50,
        ge=1,
        description="messages the recorder fetches and writes in one PostgreSQL transaction "
        "(with CALIBER_LIMIT_BATCH_EVENTS, it bounds the rows of one transaction)",
    )
    recorder_max_poll_interval_s: int = Field(
        default=600,
        ge=10,
        description="longest one fetched batch may take to write before Kafka hands the "
        "recorder's partitions to another member (max.poll.interval.ms)",
    )
