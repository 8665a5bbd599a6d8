"""Settings of the ingest worker."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, Settings


class IngestSettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["ingest"], ge=0, description="ingest /metrics port"
    )
    ingest_max_messages: int = Field(
        default=5_000, ge=1, description="messages fetched per batch by ingest"
    )
    ingest_max_batch_events: int = Field(
        default=10_000, ge=1, description="largest batch message ingest accepts"
    )
