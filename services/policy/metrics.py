"""Every Prometheus metric of the policy worker.

Label values are bounded: ``model`` is a registered model name (bounded by the registry;
every model version missing from it shares the value ``unregistered``), ``status`` is
``auto`` or ``review``, ``arm`` ``control`` or ``canary``, ``code`` an
:class:`shared.contracts.errors.ErrorCode`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.runtime.pipeline_metrics import BATCH_BUCKETS, PipelineMetrics

DECISION_LATENCY_BUCKETS = (*BATCH_BUCKETS, 30.0, 60.0, 300.0)


class PolicyMetrics(PipelineMetrics):
    """Also ``caliber_policy_batch_seconds`` (fetch → commit of one consumed batch),
    ``caliber_policy_batch_messages`` and ``caliber_policy_consumer_lag_messages``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("policy", registry)
        self.decisions = Counter(
            "caliber_policy_decisions_total",
            "Predictions decided, by registered model name and status (auto | review)",
            ["model", "status"],
            registry=registry,
        )
        self.arm_decisions = Counter(
            "caliber_policy_arm_decisions_total",
            "Predictions decided with a candidate calibrator beside the active one, by model "
            "and arm (control: the active map decided; canary: the candidate did)",
            ["model", "arm"],
            registry=registry,
        )
        self.unregistered = Counter(
            "caliber_policy_unregistered_predictions_total",
            "Predictions of model versions missing from the registry (default threshold used)",
            registry=registry,
        )
        self.decision_latency = Histogram(
            "caliber_policy_decision_latency_seconds",
            "Event time of a prediction to the policy's decision on it",
            buckets=DECISION_LATENCY_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "caliber_policy_dead_letters_total",
            "Input messages that were not a well-formed PredictionBatch, by error code",
            ["code"],
            registry=registry,
        )
        self.registry_versions = Gauge(
            "caliber_policy_registry_versions",
            "Model versions the policy knows from the registry",
            registry=registry,
        )
