"""Settings of the gateway."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class GatewaySettings(Settings):
    gateway_host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="gateway HTTP port")
    gateway_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="largest request body the gateway accepts"
    )
    gateway_ws_queue: int = Field(
        default=1_000, ge=1, description="events a slow WebSocket client may fall behind by"
    )
    outbox_poll_seconds: float = Field(
        default=0.2, gt=0, description="how often the outbox relay looks for new rows"
    )
