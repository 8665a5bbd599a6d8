"""Gauge series of the aggregator do not outlive the model versions they describe."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.aggregator.metrics import AggregatorMetrics
from shared.runtime.observability import RoundSeries


def test_a_series_not_set_in_the_next_round_is_removed() -> None:
    registry = CollectorRegistry()
    m = AggregatorMetrics(registry)
    series = RoundSeries()

    def ece(model: str) -> float | None:
        return registry.get_sample_value("caliber_ece", {"model": model, "window": "1h"})

    series.begin()
    series.set(m.ece, ("acme/a/v1", "1h"), 0.04)
    series.set(m.ece, ("acme/b/v1", "1h"), 0.07)
    series.set(m.labels_pending, ("acme/b/v1",), 12)
    series.end()
    assert (ece("acme/a/v1"), ece("acme/b/v1")) == (0.04, 0.07)

    # b is no longer exported (or has no defined value): its series go, a's stays current.
    series.begin()
    series.set(m.ece, ("acme/a/v1", "1h"), 0.05)
    series.end()
    assert (ece("acme/a/v1"), ece("acme/b/v1")) == (0.05, None)
    assert registry.get_sample_value("caliber_labels_pending", {"model": "acme/b/v1"}) is None

    # A round that fails before its end removes nothing; the next complete one does.
    series.begin()
    series.set(m.ece, ("acme/b/v1", "1h"), 0.06)
    series.begin()
    series.set(m.ece, ("acme/b/v1", "1h"), 0.06)
    series.end()
    assert (ece("acme/a/v1"), ece("acme/b/v1")) == (None, 0.06)
