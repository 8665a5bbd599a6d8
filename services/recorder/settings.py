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
        default=200,
        ge=1,
        description="messages the recorder fetches and writes in one PostgreSQL transaction",
    )
