"""Settings of the policy worker (``CALIBER_`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, Settings


class PolicySettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["policy"], ge=0, description="policy /metrics port (0 = none)"
    )
    default_threshold: float = Field(
        default=0.70,
        ge=0,
        le=1,
        description="abstain threshold of a model version missing from the registry",
    )
    policy_catch_up_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long policy waits at start to read the registry before deciding",
    )
    policy_max_messages: int = Field(
        default=500, ge=1, description="PredictionBatch messages the policy fetches per batch"
    )
    policy_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="longest wait for the first message of a batch (a batch starts as soon "
        "as one message is there, so this adds no latency)",
    )
