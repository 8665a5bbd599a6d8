"""observe_many counts a batch of values as one observe() per value would."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from shared.runtime.pipeline_metrics import observe_many


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for m in h.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def test_bulk_observation_equals_one_by_one() -> None:
    values = [0.0, 0.001, 0.0011, 0.005, 0.25, 0.2500001, 3.0, 99.0, 1e9, -1.0, 0.1, 0.1]
    buckets = (0.001, 0.005, 0.1, 0.25, 1.0, 5.0)
    one = Histogram("one", "x", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("many", "x", buckets=buckets, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values[:5])
    observe_many(many, values[5:])
    observe_many(many, [])
    a = {(n.replace("one", "h"), le): v for (n, le), v in _samples(one).items()}
    b = {(n.replace("many", "h"), le): v for (n, le), v in _samples(many).items()}
    assert a == b
    # Hand-checked: bucket le=0.001 holds 0.0, 0.001 and -1.0; +Inf holds all twelve.
    assert b[("h_bucket", "0.001")] == 3
    assert b[("h_bucket", "+Inf")] == 12
    assert math.isclose(b[("h_sum", "")], sum(values))
