"""Settings of the drift worker (``CALIBER_`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import WORKER_METRICS_PORTS, Settings


class DriftSettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["drift"], ge=0, description="drift worker /metrics port"
    )
    drift_max_messages: int = Field(
        default=500, ge=1, description="messages the drift worker fetches per batch"
    )
    drift_window_seconds: int = Field(
        default=600,
        ge=1,
        description="event-time length of the sliding window the current histograms cover",
    )
    drift_bucket_seconds: int = Field(
        default=60, ge=1, description="event-time granularity of the window's buckets"
    )
    drift_eval_seconds: float = Field(
        default=10.0, gt=0, description="how often every score is evaluated"
    )
    drift_reference_events: int = Field(
        default=5000,
        ge=10,
        description="first events of a model version that form its reference profile",
    )
    drift_min_samples: int = Field(
        default=500, ge=1, description="values a window needs before its score is trusted"
    )
    drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="default PSI threshold (numeric features, confidence)"
    )
    drift_chi_threshold: float = Field(
        default=0.3,
        gt=0,
        description="default chi-squared effect size (Cohen's w, 0.3 = a medium effect) "
        "threshold (categories, predicted-label mix)",
    )
    drift_chi_max_p_value: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="largest chi-squared p-value that may still raise an alert",
    )
    drift_cooldown_seconds: float = Field(
        default=600.0,
        ge=0,
        description="quiet time after a recovery before the same feature alerts again",
    )
