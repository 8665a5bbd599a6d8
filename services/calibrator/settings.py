"""Settings of the calibrator (``CALIBER_`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.recalibration.methods import METHODS
from shared.settings import WORKER_METRICS_PORTS, Settings


class CalibratorSettings(Settings):
    metrics_port: int = Field(
        default=WORKER_METRICS_PORTS["calibrator"], ge=0, description="calibrator /metrics port"
    )
    calibrator_methods: list[str] = Field(
        default_factory=lambda: list(METHODS),
        description="methods every run fits (JSON list); each must be a known method",
    )
    calibrator_window_seconds: int = Field(
        default=3600, ge=60, description="event time a calibration set covers, up to the run"
    )
    calibrator_max_rows: int = Field(
        default=50_000, ge=100, description="rows a set keeps at most (uniform sample above)"
    )
    calibrator_min_samples: int = Field(
        default=200, ge=10, description="labeled rows a fit part and a held-out part each need"
    )
    calibrator_holdout_fraction: float = Field(
        default=0.3, gt=0, lt=1, description="newest share of a set (by event time) held out"
    )
    calibrator_reference_rows: int = Field(
        default=2000, ge=50, description="first labeled predictions forming the reference"
    )
    calibrator_ece_slo: float = Field(
        default=0.05, gt=0, description="ECE above which a run advises recalibration"
    )
    calibrator_retrain_auc_drop: float = Field(
        default=0.1,
        gt=0,
        description="fall of the raw scores' AUC (beyond its sampling error) that advises retrain",
    )
    calibrator_bootstrap_resamples: int = Field(
        default=1000, ge=100, description="resamples of the gate's paired bootstrap"
    )
    calibrator_schedule_seconds: float = Field(
        default=86_400.0, ge=0, description="scheduled run per model version; 0 = off"
    )
    calibrator_on_promotion: bool = Field(
        default=True, description="run when a version enters staging or production"
    )
    calibrator_poll_seconds: float = Field(
        default=2.0, gt=0, description="how often requests, schedules and the queue are read"
    )
    calibrator_max_messages: int = Field(
        default=500, ge=1, description="alert messages fetched per batch"
    )
    rollout_auto_start: bool = Field(
        default=True, description="open a shadow rollout for every newly staged calibrator"
    )
    rollout_shadow_min_labeled: int = Field(
        default=500, ge=1, description="paired labeled events in shadow before canary"
    )
    rollout_canary_share: float = Field(
        default=0.1, gt=0, le=1, description="share of events a canary decides (stable hash)"
    )
    rollout_canary_min_labeled: int = Field(
        default=100, ge=0, description="labeled canary-arm events before a promotion"
    )
    rollout_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="false-decision rate of the promote/rollback test"
    )
    rollout_min_labeled: int = Field(
        default=1000, ge=10, description="paired labeled events before the test may decide"
    )
    rollout_max_labeled: int = Field(
        default=50_000, ge=10, description="paired labeled events after which a canary stops"
    )
    rollout_tuned_for: int = Field(
        default=5000, ge=10, description="labeled events where the test's interval is tightest"
    )
    rollout_review_band: float = Field(
        default=0.1, gt=0, le=1, description="largest review-rate change a candidate may cause"
    )
