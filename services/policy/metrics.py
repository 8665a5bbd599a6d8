"""Every Prometheus metric of the policy worker.

The ``model`` label is the registered model name (bounded by the registry); predictions
of models missing from the registry share the value ``unregistered``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.pipeline_metrics import BATCH_BUCKETS, PipelineMetrics


class PolicyMetrics(PipelineMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("policy", registry)
        self.decisions = Counter(
            "caliber_policy_decisions_total",
            "Decisions by model and status (auto | review)",
            ["model", "status"],
            registry=registry,
        )
        self.unregistered = Counter(
            "caliber_policy_unregistered_predictions_total",
            "Predictions of model versions missing from the registry (default threshold used)",
            registry=registry,
        )
        self.decision_latency = Histogram(
            "caliber_policy_decision_latency_seconds",
            "Event time of a prediction to its decision",
            buckets=(*BATCH_BUCKETS, 30.0, 60.0),
            registry=registry,
        )
        self.registry_versions = Gauge(
            "caliber_policy_registry_versions",
            "Model versions the policy knows from the registry",
            registry=registry,
        )
