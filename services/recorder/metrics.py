"""Every Prometheus metric of the recorder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.pipeline_metrics import PipelineMetrics


class RecorderMetrics(PipelineMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("recorder", registry)
        self.rows = Counter(
            "caliber_recorder_rows_total",
            "Rows inserted or updated, by table and operation (insert | label)",
            ["table", "operation"],
            registry=registry,
        )
