"""Every Prometheus metric of the policy worker.

The ``model`` label is the registered model name (bounded by the registry); predictions
of models missing from the registry share the value ``unregistered``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "caliber_policy_batch_seconds",
            "Time to process one consumed batch, fetch to transaction commit",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "caliber_policy_consumer_lag_messages",
            "Messages behind the high watermark, per input partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.registry_versions = Gauge(
            "caliber_policy_registry_versions",
            "Model versions the policy knows from the registry",
            registry=registry,
        )

    def batch_done(self, n_messages: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in partition_lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
