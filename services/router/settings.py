"""Settings of the router worker."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class RouterSettings(Settings):
    metrics_port: int = Field(default=9107, ge=0, description="router /metrics port")
    router_max_messages: int = Field(
        default=2_000,
        ge=1,
        description="messages the router fetches per batch (a routing record is one event; "
        "a label or prediction message up to a batch of them)",
    )
    route_pending_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="how long an outcome that came before its decision record waits for it",
    )
    route_label_wait_seconds: int = Field(
        default=600,
        ge=1,
        description="how long a label that came before its routed prediction waits for it",
    )
