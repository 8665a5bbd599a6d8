"""The aggregator's bucket increments, checked by hand on a few events."""

from __future__ import annotations

import numpy as np
import pytest

from services.aggregator.counters import (
    FieldSums,
    LabeledEvents,
    decision_increments,
    labeled_increments,
    new_increments,
)
from services.aggregator.processing import PredictionRecord
from shared.windows.calibration import SCALE, pending_slot_seconds

T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC: minute 22:13, hour 22:00
MINUTE = T0 // 60 * 60
HOUR = T0 // 3600 * 3600
DAY = T0 // 86400 * 86400


def test_decisions_count_per_minute_hour_and_day() -> None:
    inc = new_increments()
    ms = np.array([T0 * 1000, T0 * 1000 + 1, (T0 + 60) * 1000], dtype=np.int64)
    decision_increments(inc, "t/m/v", ms, np.array([True, False, True]))
    assert inc[("m", "t/m/v", MINUTE)] == {"n": 2, "rv": 1}
    assert inc[("m", "t/m/v", MINUTE + 60)] == {"n": 1, "rv": 1}
    assert inc[("h", "t/m/v", HOUR)] == {"n": 3, "rv": 2}
    assert inc[("d", "t/m/v", DAY)] == {"n": 3, "rv": 2}
    assert len(inc) == 4


def test_field_sums_group_every_family_once_and_roll_minutes_up() -> None:
    # Two events in minute 22:13, one in the next hour; values chosen so one field sums to 0.
    ms = np.array([T0 * 1000, T0 * 1000 + 5, (T0 + 3600) * 1000], dtype=np.int64)
    inc = new_increments()
    inc[("h", "t/m/v", HOUR)]["x"] = 10  # an existing field is added to, not replaced
    sums = FieldSums("t/m/v", ms)
    sums.add("x", np.array([1, 2, 4]))
    sums.add("zero", np.array([3, -3, 0]))
    sums.add_binned("b", np.array([0, 2, 2]), np.array([5, 6, 7]), width=3, suffix="|k")
    sums.into(inc)
    assert inc[("m", "t/m/v", MINUTE)] == {"x": 3, "b0|k": 5, "b2|k": 6}
    assert inc[("m", "t/m/v", MINUTE + 3600)] == {"x": 4, "b2|k": 7}
    assert inc[("h", "t/m/v", HOUR)] == {"x": 13, "b0|k": 5, "b2|k": 6}
    assert inc[("h", "t/m/v", HOUR + 3600)] == {"x": 4, "b2|k": 7}
    assert inc[("d", "t/m/v", DAY)] == {"x": 7, "b0|k": 5, "b2|k": 13}
    assert len(inc) == 5
    # Sums too large for exact float64 take the sorted path and stay exact.
    big = FieldSums("t/m/v", ms[:2])
    big.add("s", np.array([2**62, 1], dtype=np.int64))
    out = new_increments()
    big.into(out)
    assert out[("m", "t/m/v", MINUTE)] == {"s": 2**62 + 1}


def test_field_sums_refuse_a_bin_outside_its_width() -> None:
    sums = FieldSums("t/m/v", np.array([T0 * 1000], dtype=np.int64))
    sums.add_binned("b", np.array([3]), np.array([1]), width=3)
    with pytest.raises(ValueError, match="bin outside"):
        sums.into(new_increments())


def test_labeled_events_fill_reliability_fine_and_delay_bins() -> None:
    # Confidences 0.95 (right), 0.95 (wrong), 1.0 (right), 0.3 (wrong), on a bin edge 0.3.
    inc = new_increments()
    ms = np.full(4, T0 * 1000, dtype=np.int64)
    labeled_increments(
        inc,
        LabeledEvents(
            "t/m/v",
            ms,
            np.array([0.95, 0.95, 1.0, 0.3]),
            np.array([True, False, True, False]),
            np.array([30.0, 30.0, 3600.0, 90_000.0]),
        ),
    )
    day = inc[("d", "t/m/v", DAY)]
    assert day == inc[("h", "t/m/v", HOUR)] == inc[("m", "t/m/v", MINUTE)]
    assert day["L"] == 4
    # Reliability bins: 0.95 and 1.0 in bin 9, 0.3 in bin 3 ([0.3, 0.4)).
    assert (day["c9"], day["k9"], day["s9"]) == (3, 2, int(2.9 * SCALE))
    assert (day["c3"], day.get("k3", 0), day["s3"]) == (1, 0, int(0.3 * SCALE))
    assert not any(f"c{i}" in day for i in (0, 1, 2, 4, 5, 6, 7, 8))
    # Fine cells: 950 holds both 0.95s (one error), 1000 only 1.0, 300 the 0.3.
    assert (day["h950"], day["e950"]) == (2, 1)
    assert not any(f.startswith("f") for f in day)  # risk–coverage needs counts and errors
    assert (day["h1000"], day.get("e1000", 0)) == (1, 0)
    assert (day["h300"], day["e300"]) == (1, 1)
    # Top-label Brier: 0.05² + 0.95² + 0 + 0.3² = 0.995.
    assert day["B"] == round(0.995 * SCALE)
    # Delays: 30 s ≤ 60 (bucket 0) twice, 3600 s ≤ 3600 (bucket 3), 25 h ≤ 7 d (bucket 7).
    assert (day["dl0"], day["dl3"], day["dl7"]) == (2, 1, 1)


def test_probabilities_give_brier_nll_and_one_vs_rest_bins() -> None:
    inc = new_increments()
    labeled_increments(
        inc,
        LabeledEvents(
            "t/m/v",
            np.array([T0 * 1000], dtype=np.int64),
            np.array([0.7]),
            np.array([False]),
            np.array([0.0]),
            probabilities=np.array([[0.7, 0.2, 0.1]]),
            classes=["cat", "dog", "bird"],
            true_index=np.array([1]),
        ),
    )
    day = inc[("d", "t/m/v", DAY)]
    # Σ_c (p_c − y_c)² = 0.49 + 0.64 + 0.01 = 1.14; NLL = −ln 0.2.
    assert day["B"] == round(1.14 * SCALE)
    assert day["N"] == round(-np.log(0.2) * SCALE) and day["Nn"] == 1
    assert (day["C7|cat"], day.get("H7|cat", 0), day["P7|cat"]) == (1, 0, round(0.7 * SCALE))
    assert (day["C2|dog"], day["H2|dog"]) == (1, 1)
    assert (day["C1|bird"], day.get("H1|bird", 0)) == (1, 0)


def test_a_join_record_keeps_its_arrival_slot_and_older_records_still_decode() -> None:
    rec = PredictionRecord("acme/m/v1", 1_000, 0.8, "cat", ["cat", "dog"], [0.8, 0.2], 7_200)
    assert PredictionRecord.decode(rec.encode()) == rec
    # Written before records carried a slot: decodes with none (its count is not known).
    legacy = "\x1f".join(["acme/m/v1", "1000", "0.8", "cat", "cat\x1edog", "0.8,0.2"])
    assert PredictionRecord.decode(legacy).slot == -1
    assert PredictionRecord.decode(legacy).probabilities == [0.8, 0.2]


def test_pending_slots_are_an_hour_at_the_default_horizon_and_never_zero() -> None:
    assert pending_slot_seconds(7 * 24 * 3600) == 3600
    assert pending_slot_seconds(60) == 1
    assert pending_slot_seconds(24 * 3600) == 514
