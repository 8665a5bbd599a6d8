"""The pipeline benchmark's decision latency, whole and split where the policy decides."""

from __future__ import annotations

import numpy as np

from bench.pipeline import _latency_parts, _phase_latency


def test_a_phase_takes_only_its_own_events_and_splits_their_latency() -> None:
    # Three events inside the phase [1000, 2000], one before and one after it.
    event = np.array([900, 1000, 1500, 2000, 2100], dtype=np.int64)
    decided = event + np.array([5, 10, 20, 30, 7])
    seen = decided + np.array([1, 2, 4, 6, 1])
    phase = {"rate": 500, "started_ms": 1000, "ended_ms": 2000}
    _phase_latency(phase, event, decided, seen)

    assert "started_ms" not in phase and "ended_ms" not in phase
    whole, dec, rd = (
        phase["decision_latency_ms"],
        phase["decided_ms"],
        phase["readable_after_decided_ms"],
    )
    assert whole["events"] == dec["events"] == rd["events"] == 3
    # Whole: 12, 24, 36 ms; decided: 10, 20, 30; readable after: 2, 4, 6 (linear percentiles).
    assert whole["p50"] == 24 and whole["max"] == 36
    assert dec["p50"] == 20 and dec["p99"] == np.percentile([10, 20, 30], 99)
    assert rd["p50"] == 4 and rd["max"] == 6


def test_the_split_is_printed_only_when_the_report_has_it() -> None:
    phase = {
        "decided_ms": {"events": 3, "p50": 20.0, "p99": 29.8, "max": 30.0},
        "readable_after_decided_ms": {"events": 3, "p50": 4.0, "p99": 5.96, "max": 6.0},
    }
    (line,) = _latency_parts(phase)
    assert "decided by the policy" in line
    assert "p50 20 ms, p99 30 ms" in line and "p50 4 ms, p99 6 ms" in line
    assert _latency_parts({}) == []
