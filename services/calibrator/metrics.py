"""Every Prometheus metric of the calibrator (labels bounded: verdicts, triggers, states)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.runtime.pipeline_metrics import PipelineMetrics


class CalibratorMetrics(PipelineMetrics):
    """Also ``caliber_calibrator_batch_seconds``, ``caliber_calibrator_batch_messages`` and
    ``caliber_calibrator_consumer_lag_messages`` (the alert consumer)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("calibrator", registry)
        self.runs = Counter(
            "caliber_calibrator_runs_total",
            "Calibration runs recorded, by verdict (staged, not_staged, rejected, failed)",
            ["verdict"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "caliber_calibrator_run_seconds",
            "Time of one calibration run: set, fits, gate and record",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.triggers = Counter(
            "caliber_calibrator_triggers_total",
            "Alert triggers, by trigger and what became of them (queued, coalesced, known)",
            ["trigger", "state"],
            registry=registry,
        )
