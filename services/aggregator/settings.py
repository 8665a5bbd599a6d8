"""Settings of the aggregator."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.recalibration.methods import METHODS
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
    segment_refit_every: int = Field(
        default=10, ge=1, description="a segment refits after this many new labels (N)"
    )
    segment_window: int = Field(
        default=500, ge=2, description="labeled events a segment keeps and refits on (W)"
    )
    segment_min_labels: int = Field(
        default=50, ge=2, description="labeled events a segment needs before its first fit (M)"
    )
    segment_method: str = Field(
        default="isotonic", description="calibration method of segment refits"
    )
    segment_clip_low: float = Field(
        default=0.01, ge=0, lt=1, description="lowest calibrated confidence a segment map gives"
    )
    segment_clip_high: float = Field(
        default=0.99, gt=0, le=1, description="highest calibrated confidence a segment map gives"
    )
    segment_refit_seconds: float = Field(
        default=1.0, gt=0, description="how often the refit loop looks for segments due"
    )

    @model_validator(mode="after")
    def _segment_settings(self) -> AggregatorSettings:
        if self.segment_method not in METHODS:
            raise ValueError(
                f"CALIBER_SEGMENT_METHOD={self.segment_method!r} is not a method: expected "
                f"one of {sorted(METHODS)}"
            )
        if self.segment_min_labels > self.segment_window:
            raise ValueError(
                f"CALIBER_SEGMENT_MIN_LABELS={self.segment_min_labels} is above "
                f"CALIBER_SEGMENT_WINDOW={self.segment_window}: a window could never hold "
                "enough labels to fit"
            )
        if self.segment_clip_low >= self.segment_clip_high:
            raise ValueError(
                f"CALIBER_SEGMENT_CLIP_LOW={self.segment_clip_low} must be below "
                f"CALIBER_SEGMENT_CLIP_HIGH={self.segment_clip_high}"
            )
        return self
