"""Every Prometheus metric of the aggregator.

``model`` label values are model version keys seen in traffic; at most ``MAX_EXPORTED``
model versions are exported (the rest are computed and alerted on, not exported), so the
label set stays bounded. The per-model gauges are set through
:class:`shared.runtime.observability.RoundSeries`: a series
not set again in the next evaluation round (its model no longer exported, or its value no
longer defined) is removed rather than left at a stale value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.runtime.pipeline_metrics import PipelineMetrics
from shared.windows.calibration import DELAY_BUCKETS_S

MAX_EXPORTED = 200
RISK_COVERAGES = ("0.5", "0.8", "0.9", "0.95")
"""Coverages at which ``caliber_selective_risk`` reports the risk–coverage curve."""


class AggregatorMetrics(PipelineMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("aggregator", registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"caliber_{name}", doc, ["model", "window"], registry=registry)

        self.ece = gauge("ece", "Expected calibration error of labeled predictions in the window")
        self.mce = gauge("mce", "Maximum calibration error (largest bin gap)")
        self.brier = gauge("brier", "Mean Brier score")
        self.aurc = gauge("aurc", "Area under the risk-coverage curve")
        self.accuracy = gauge("accuracy", "Share of labeled predictions that were correct")
        self.coverage = gauge("coverage", "Share of decisions auto-accepted")
        self.review_rate = gauge("review_rate", "Share of decisions withheld for review")
        self.labeled = gauge("labeled_predictions", "Labeled predictions in the window")
        self.estimated_accuracy = gauge(
            "estimated_accuracy",
            "Expected accuracy of every prediction in the window from calibrated confidence",
        )
        self.estimate_gap = gauge(
            "estimate_gap",
            "Realised minus estimated accuracy of the window's labeled predictions",
        )
        self.reliability_accuracy = Gauge(
            "caliber_reliability_accuracy",
            "Accuracy of each reliability bin (bin = lower edge index 0..9)",
            ["model", "window", "bin"],
            registry=registry,
        )
        self.reliability_confidence = Gauge(
            "caliber_reliability_confidence",
            "Mean confidence of each reliability bin",
            ["model", "window", "bin"],
            registry=registry,
        )
        self.selective_risk = Gauge(
            "caliber_selective_risk",
            "Error rate of the most confident predictions that make up the coverage",
            ["model", "window", "coverage"],
            registry=registry,
        )
        self.ece_slo = Gauge(
            "caliber_ece_slo", "ECE at or above which a calibration alert fires", registry=registry
        )
        self.brier_baseline = Gauge(
            "caliber_brier_baseline",
            "Brier of the model's baseline window; 1.1 × this raises a performance alert",
            ["model"],
            registry=registry,
        )
        self.ece_control_limit = Gauge(
            "caliber_ece_control_limit",
            "Control-chart limit of the alert window's ECE: mean + 3σ of its history",
            ["model"],
            registry=registry,
        )
        self.labels_pending = Gauge(
            "caliber_labels_pending",
            "Predictions still waiting for their label",
            ["model"],
            registry=registry,
        )
        self.label_delay = Histogram(
            "caliber_label_delay_seconds",
            "Event time of a prediction to the time of its label",
            buckets=tuple(float(b) for b in DELAY_BUCKETS_S),
            registry=registry,
        )
        self.events = Counter(
            "caliber_aggregator_events_total",
            "Events counted, by kind (prediction | label)",
            ["kind"],
            registry=registry,
        )
        self.alerts = Counter(
            "caliber_aggregator_alerts_total",
            "Alerts raised, by metric and severity",
            ["metric", "severity"],
            registry=registry,
        )
        self.segment_refits = Counter(
            "caliber_aggregator_segment_refits_total",
            "Segment calibration refits published, by outcome (fitted | failed: the segment "
            "falls back)",
            ["outcome"],
            registry=registry,
        )
        self.segment_refit_seconds = Histogram(
            "caliber_aggregator_segment_refit_seconds",
            "Time to fit one segment's map on its window",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=registry,
        )
