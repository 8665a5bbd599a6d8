"""Every Prometheus metric of the drift worker.

Label values are bounded: ``model`` is a model version key, at most ``MAX_EXPORTED`` of
them (the first by name; the rest are scored and alerted on, not exported); ``feature`` is
one of the model's profiled parts, at most ``shared.windows.drift.MAX_FEATURES`` features
plus ``__confidence__`` and ``__predicted_label__`` (the profile caps them when it is
built, and nothing outside a profile is ever scored); ``method`` is a
``shared.drift.scores.DriftMethod``. A model's series are dropped when its profile is
replaced by one without the feature.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.runtime.pipeline_metrics import PipelineMetrics

MAX_EXPORTED = 200


class DriftMetrics(PipelineMetrics):
    """Also ``caliber_drift_batch_seconds``, ``caliber_drift_batch_messages`` and
    ``caliber_drift_consumer_lag_messages``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("drift", registry)
        self.score = Gauge(
            "caliber_drift_score",
            "Current drift score of a model version's feature over the sliding window, by "
            "method (psi, js_distance, ks, chi_squared = Cohen's w, mean_shift)",
            ["model", "feature", "method"],
            registry=registry,
        )
        self.samples = Gauge(
            "caliber_drift_samples",
            "Values in the window that the feature's current scores rest on",
            ["model", "feature"],
            registry=registry,
        )
        self.events = Counter(
            "caliber_drift_events_total",
            "Events counted, by use (reference = formed a reference profile, scored = "
            "counted into the current window)",
            ["use"],
            registry=registry,
        )
        self.alerts = Counter(
            "caliber_drift_alerts_total",
            "Drift alerts raised or resolved, by method and severity",
            ["method", "severity"],
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "caliber_drift_evaluation_seconds",
            "Time to evaluate every score of one model version (Redis read included)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.profiles = Counter(
            "caliber_drift_profiles_total",
            "Reference profiles activated, by source (window | upload)",
            ["source"],
            registry=registry,
        )
