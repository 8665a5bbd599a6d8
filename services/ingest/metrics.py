"""Every Prometheus metric of the ingest worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.runtime.pipeline_metrics import PipelineMetrics


class IngestMetrics(PipelineMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("ingest", registry)
        self.events = Counter(
            "caliber_ingest_events_total",
            "Events seen by ingest, by kind (prediction | label) and outcome "
            "(accepted | duplicate | rejected)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "caliber_ingest_dead_letters_total",
            "Messages or events sent to the dead-letter topic, by error code",
            ["code"],
            registry=registry,
        )
