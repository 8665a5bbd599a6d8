"""Every Prometheus metric of the ingest worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.batch_seconds = Histogram(
            "caliber_ingest_batch_seconds",
            "Time to process one consumed batch, fetch to transaction commit",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.0075,
                0.01,
                0.015,
                0.025,
                0.035,
                0.05,
                0.075,
                0.1,
                0.15,
                0.25,
                0.35,
                0.5,
                0.75,
                1.0,
                1.5,
                2.5,
                5.0,
            ),
            registry=registry,
        )
        self.batch_messages = Histogram(
            "caliber_ingest_batch_messages",
            "Kafka messages per consumed batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "caliber_ingest_consumer_lag_messages",
            "Messages behind the high watermark, per input partition",
            ["topic", "partition"],
            registry=registry,
        )

    def batch_done(self, n_messages: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)
        self.batch_messages.observe(n_messages)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in partition_lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
