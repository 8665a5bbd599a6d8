"""Metrics every batch-loop worker exports, named after the service."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15,
    0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip


class PipelineMetrics:
    """``caliber_<service>_batch_seconds``, ``caliber_<service>_consumer_lag_messages`` and
    ``caliber_<service>_quarantined_messages_total``.

    Implements :class:`shared.runtime.pipeline.PipelineHooks`.
    """

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.batch_seconds = Histogram(
            f"caliber_{service}_batch_seconds",
            "Time to process one consumed batch, fetch to commit",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_messages = Histogram(
            f"caliber_{service}_batch_messages",
            "Kafka messages per consumed batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"caliber_{service}_consumer_lag_messages",
            "Messages behind the high watermark, per input partition",
            ["topic", "partition"],
            registry=registry,
        )

        self.quarantined_messages = Counter(
            f"caliber_{service}_quarantined_messages",
            "Messages set aside (dead letter worker_crash) after repeated crashes on them",
            ["topic"],
            registry=registry,
        )

    def quarantined(self, topic: str) -> None:
        self.quarantined_messages.labels(topic).inc()

    def batch_done(self, n_messages: int, seconds: float) -> None:
        self.batch_seconds.observe(seconds)
        self.batch_messages.observe(n_messages)

    def lag(self, partition_lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in partition_lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)


def observe_many(histogram: Histogram, values: npt.ArrayLike) -> None:
    """``histogram.observe(v)`` for every value, counted per bucket with numpy: the same
    buckets, count and sum as one call per value, for what a batch of thousands of events
    observes (one lock and one loop over the buckets per event otherwise)."""
    amounts = np.asarray(values, dtype=np.float64).ravel()
    if not amounts.size:
        return
    histogram._raise_if_not_observable()
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # observe() counts a value in the first bucket whose bound it does not exceed.
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(amounts.sum()))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
