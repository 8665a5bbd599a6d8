"""The aggregator's before-labels sums: hand-computed increments and their window report."""

from __future__ import annotations

import numpy as np
import pytest

from services.aggregator.counters import (
    LabeledEvents,
    estimate_increments,
    labeled_increments,
    new_increments,
)
from services.aggregator.processing import PredictionRecord
from shared.estimation.report import report
from shared.windows.calibration import SCALE, Totals, split_calibrated

M = "acme/m/v1"


def test_decision_sums_hand_computed() -> None:
    inc = new_increments()
    ms = np.array([1_000, 2_000, 3_000, 70_000], dtype=np.int64)
    cal = np.array([0.9, 0.5, np.nan, 0.8])
    review = np.array([False, True, True, False])
    estimate_increments(inc, M, ms, cal, review)
    minute0, minute1 = inc[("m", M, 0)], inc[("m", M, 60)]
    assert minute0["En"] == 2 and minute0["Ean"] == 1
    assert minute0["Ec"] == round(1.4 * SCALE)
    assert minute0["Ev"] == round((0.09 + 0.25) * SCALE)
    assert minute0["Eac"] == round(0.9 * SCALE) and minute0["Eav"] == round(0.09 * SCALE)
    assert minute1["En"] == 1 and minute1["Eac"] == round(0.8 * SCALE)
    hour = inc[("h", M, 0)]
    assert hour["En"] == 3 and hour["Ec"] == round(2.2 * SCALE)


def test_labeled_sums_and_calibrated_histogram() -> None:
    inc = new_increments()
    ev = LabeledEvents(
        M,
        np.array([1_000, 2_000, 3_000], dtype=np.int64),
        np.array([0.99, 0.99, 0.99]),  # raw: not what the histogram is binned on
        np.array([True, False, True]),
        np.zeros(3),
        calibrated=np.array([0.9, 0.6, np.nan]),
        auto=np.array([True, False, True]),
    )
    labeled_increments(inc, ev)
    b = inc[("d", M, 0)]
    assert (b["Ln"], b["Lk"], b["Lan"], b["Lak"]) == (2, 1, 1, 1)
    assert b["Lc"] == round(1.5 * SCALE) and b["Lav"] == round(0.09 * SCALE)
    assert (b["Q90"], b["Q60"], b["X60"]) == (1, 1, 1)  # 0.01-wide cells
    assert "X90" not in b and "Q99" not in b
    rest, calibrated = split_calibrated(b)
    assert calibrated == {"h90": 1, "h60": 1, "e60": 1}
    assert "Q900" not in rest and rest["h990"] == 3

    r = report(Totals(rest), "1h", z=2.0)
    assert r.labeled is not None and r.labeled.realised == 0.5
    assert r.labeled.estimate.accuracy == pytest.approx(0.75)
    assert r.labeled.gap == pytest.approx(-0.25)
    assert r.labeled_auto is not None and r.labeled_auto.realised == 1.0
    assert r.estimated is None  # no decision sums in this bucket


def test_estimate_off_keeps_no_sums() -> None:
    inc = new_increments()
    ev = LabeledEvents(
        M,
        np.array([1_000], dtype=np.int64),
        np.array([0.9]),
        np.array([True]),
        np.zeros(1),
        calibrated=np.array([0.9]),
        auto=np.array([True]),
    )
    labeled_increments(inc, ev, estimate=False)
    assert not any(f[0] in "QX" or f.startswith("Ln") for f in inc[("d", M, 0)])


def test_join_record_keeps_calibrated_confidence_and_decision() -> None:
    rec = PredictionRecord(M, 1_000, 0.8, "cat", [], None, 7_200, 0.65, True)
    assert PredictionRecord.decode(rec.encode()) == rec
    older = PredictionRecord(M, 1_000, 0.8, "cat", [], None, 7_200).encode()
    assert PredictionRecord.decode(older.rsplit("\x1f", 2)[0]).calibrated is None


def test_floor_of_version_then_model_then_default() -> None:
    from services.aggregator.evaluate import estimate_floor
    from services.aggregator.settings import AggregatorSettings

    s = AggregatorSettings(estimate_floor=0.5, estimate_floors={"acme/m": 0.8, "acme/m/v2": 0.9})
    assert estimate_floor(s, "acme/m/v1") == 0.8
    assert estimate_floor(s, "acme/m/v2") == 0.9
    assert estimate_floor(s, "acme/other/v1") == 0.5
