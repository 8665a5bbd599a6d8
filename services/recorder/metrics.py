"""Every Prometheus metric of the recorder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RecorderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "caliber_recorder_rows_total",
            "Rows inserted or updated, by table and operation (insert | label | pending)",
            ["table", "operation"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "caliber_recorder_batch_seconds",
            "Time to write one consumed batch in one PostgreSQL transaction",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "caliber_recorder_consumer_lag_messages",
            "Messages behind the high watermark, per input partition",
            ["topic", "partition"],
            registry=registry,
        )

    def batch_done(self, n_messages: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in partition_lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
