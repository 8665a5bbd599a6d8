"""Every Prometheus metric of the router worker.

``goal`` and ``path`` label values come from traffic, so they go through a
:class:`~shared.routing.metric_labels.LabelCap`: the first values seen are kept and the rest
are reported as ``other``, which bounds the series. A ``goal`` value is ``tenant/goal``,
as the aggregator's ``model`` values carry the tenant.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.routing.metric_labels import LabelCap
from shared.runtime.pipeline_metrics import PipelineMetrics


class RouterMetrics(PipelineMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("router", registry)
        self.cap = LabelCap()
        self.outcomes = Counter(
            "caliber_route_outcomes_total",
            "Outcomes counted, by goal, path and source (api | label | deadletter); forced "
            "and fallback decisions' outcomes are counted here too",
            ["goal", "path", "source"],
            registry=registry,
        )
        self.decisions = Counter(
            "caliber_route_decisions_total",
            "Decisions recorded, by goal, path and kind (chosen | forced | fallback)",
            ["goal", "path", "kind"],
            registry=registry,
        )
        self.successes = Counter(
            "caliber_route_successes_total",
            "Sum of outcome scores (a success counts 1), by goal and path",
            ["goal", "path"],
            registry=registry,
        )
        self.skipped = Counter(
            "caliber_route_outcomes_skipped_total",
            "Outcomes not counted, by reason (duplicate | pending | tenant)",
            ["reason"],
            registry=registry,
        )

    def decision(self, tenant: str, goal: str, path: str, kind: str) -> None:
        g, p = self.cap.pair(f"{tenant}/{goal}", path)
        self.decisions.labels(g, p, kind).inc()

    def outcome(self, tenant: str, goal: str, path: str, source: str, score: float) -> None:
        g, p = self.cap.pair(f"{tenant}/{goal}", path)
        self.outcomes.labels(g, p, source).inc()
        self.successes.labels(g, p).inc(score)
