"""Settings of the gateway."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings
from shared.validation import DEFAULT_LIMITS


class GatewaySettings(Settings):
    gateway_host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="gateway HTTP port")
    gateway_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest request body the gateway accepts"
    )
    gateway_max_reference_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="largest body of a drift-reference upload (100,000 events of 20 features "
        "in columnar JSON take about 40 MB)",
    )
    gateway_max_request_events: int = Field(
        default=DEFAULT_LIMITS.max_batch_events,
        ge=1,
        description="most events one POST /api/predictions/batch may carry",
    )
    gateway_rate_requests_per_second: float = Field(
        default=0.0,
        ge=0,
        description="requests a second one API key may make to this gateway process (0: no "
        "limit); beyond it 429 with Retry-After",
    )
    gateway_rate_events_per_second: float = Field(
        default=0.0,
        ge=0,
        description="events a second one API key may post to this gateway process (0: no "
        "limit); beyond it 429 with Retry-After",
    )
    gateway_rate_burst_seconds: float = Field(
        default=2.0,
        gt=0,
        description="a key's bucket holds this many seconds of its rate, so short bursts pass",
    )
    gateway_ws_queue: int = Field(
        default=1_000, ge=1, description="events a slow WebSocket client may fall behind by"
    )
    gateway_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long a looked-up API key is trusted before PostgreSQL is asked again "
        "(a revoked key stops working within this time)",
    )
    gateway_open_metrics: bool = Field(
        default=False,
        description="serve /metrics without an API key (for a scraper on a private network)",
    )
    gateway_db_pool_size: int = Field(
        default=10, ge=2, description="PostgreSQL connections of the gateway"
    )
    outbox_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="longest the outbox relay waits for a NOTIFY before it looks for rows",
    )
    outbox_batch_rows: int = Field(
        default=500, ge=1, description="outbox rows the relay publishes per flush"
    )
    outbox_retention_hours: float = Field(
        default=24.0, gt=0, description="how long published outbox rows are kept"
    )
