"""Settings of the aggregator."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, Settings


class AggregatorSettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["aggregator"], ge=0, description="aggregator /metrics port"
    )
    aggregator_max_messages: int = Field(
        default=500, ge=1, description="messages the aggregator fetches per batch"
    )
    snapshot_interval_seconds: float = Field(
        default=10.0, gt=0, description="how often metric snapshots and alerts are evaluated"
    )
    ece_slo: float = Field(default=0.05, gt=0, description="ECE above this raises an alert")
    alert_window: str = Field(default="1h", description="window the alerts evaluate")
    alert_min_labeled: int = Field(
        default=200, ge=1, description="labeled predictions a window needs before it can alert"
    )
    alert_cooldown_seconds: float = Field(
        default=600.0, ge=0, description="quiet time after a recovery before the same alert again"
    )
    estimate_enabled: bool = Field(
        default=True,
        description="keep the before-labels sums (CBPE estimate, calibrated fine histogram)",
    )
    estimate_band_z: float = Field(
        default=2.576, gt=0, description="half-width of the estimate's band in sd (99 %)"
    )
    estimate_floor: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="estimated accuracy below this raises a performance alert (0: off)",
    )
    estimate_floors: dict[str, float] = Field(
        default_factory=dict,
        description="per-model floors, JSON: 'tenant/name' or 'tenant/name/version' → floor",
    )
    estimate_min_predictions: int = Field(
        default=200, ge=1, description="predictions a window needs before its estimate alerts"
    )
