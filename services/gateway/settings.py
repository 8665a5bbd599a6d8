"""Settings of the gateway."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.gateway.auth import check_roles
from shared.contracts.validation import DEFAULT_LIMITS
from shared.settings import GatewayAddress


class GatewaySettings(GatewayAddress):
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
        description="requests a second one API key may make to all gateway replicas together "
        "(0: no limit); beyond it 429 with Retry-After",
    )
    gateway_rate_events_per_second: float = Field(
        default=0.0,
        ge=0,
        description="events a second one API key may post to all gateway replicas together "
        "(0: no limit); beyond it 429 with Retry-After",
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
    gateway_cors_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose pages may call the API from a "
        'browser (CORS), as a JSON list, e.g. ["http://localhost:5173"]; empty: none',
    )
    gateway_anonymous: bool = Field(
        default=False,
        description="anonymous access: a request without a key acts as "
        "CALIBER_GATEWAY_ANONYMOUS_TENANT with CALIBER_GATEWAY_ANONYMOUS_ROLES (a key, when "
        "given, is still checked); refused at start beyond loopback unless "
        "CALIBER_GATEWAY_ANONYMOUS_FORCE",
    )
    gateway_anonymous_tenant: str = Field(
        default="default", min_length=1, description="the tenant anonymous requests act as"
    )
    gateway_anonymous_roles: list[str] = Field(
        default_factory=lambda: ["viewer"],
        description="the roles anonymous requests hold, as a JSON list",
    )
    gateway_anonymous_force: bool = Field(
        default=False,
        description="allow anonymous access while the gateway listens beyond loopback",
    )
    gateway_live_prediction_messages: bool = Field(
        default=False,
        description="/ws/live also sends each decision as a message of type prediction "
        "(the original dashboard's live panel reads those)",
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
    estimate_band_z: float = Field(
        default=2.576,
        gt=0,
        description="half-width of the performance estimate's band in sd (99 %; as the "
        "aggregator's CALIBER_ESTIMATE_BAND_Z)",
    )
    route_floor: float = Field(
        default=1 / 6.3,
        ge=0,
        le=1,
        description="routing: share of traffic each path with too few outcomes keeps at least",
    )
    route_min_outcomes: int = Field(
        default=50, ge=0, description="routing: outcomes a path needs before the floor lifts"
    )
    route_credible: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="routing: P(a better than b) at which a is credibly better; cost and "
        "latency only decide between paths no other path credibly beats",
    )
    route_redis_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        description="routing: longest decide waits for Redis before it answers a fallback",
    )

    @field_validator("gateway_anonymous_roles")
    @classmethod
    def _known_roles(cls, roles: list[str]) -> list[str]:
        return check_roles(roles)

    @field_validator("gateway_anonymous_tenant")
    @classmethod
    def _tenant_name(cls, tenant: str) -> str:
        if "/" in tenant:
            raise ValueError(f"tenant {tenant!r} must be a name without '/'")
        return tenant

    @field_validator("gateway_cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and (
                "://" not in origin or origin.endswith("/") or origin.count("/") > 2
            ):
                raise ValueError(
                    f"origin {origin!r} must be scheme://host[:port] without a path (or *)"
                )
        return origins
