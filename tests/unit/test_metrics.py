"""Calibration and selective-prediction metrics against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.metrics.calibration import (
    ReliabilityStats,
    accuracy,
    bin_index,
    brier,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_bins,
)
from shared.metrics.selective import ConfidenceHistogram, risk_coverage

# Worked example, M = 10:
#   conf    0.95 0.9 0.85 0.6 0.55 0.3      bins 9 9 8 6 5 3
#   correct  1    1   0    1   0    0
CONF = np.array([0.95, 0.9, 0.85, 0.6, 0.55, 0.3])
OK = np.array([1, 1, 0, 1, 0, 0], dtype=bool)


def test_worked_example_calibration() -> None:
    s = ReliabilityStats.from_arrays(CONF, OK)
    # bin 9: n 2, conf .925, acc 1 → gap .075; bins 8, 6, 5, 3: gaps .85, .4, .55, .3
    # ECE = (2·.075 + .85 + .4 + .55 + .3) / 6 = 2.25 / 6 = .375
    assert ece(s) == pytest.approx(0.375, abs=1e-12)
    assert mce(s) == pytest.approx(0.85, abs=1e-12)
    assert accuracy(s) == pytest.approx(0.5)
    # (.05² + .1² + .85² + .4² + .55² + .3²) / 6 = 1.2875 / 6
    assert brier(s) == pytest.approx(1.2875 / 6, abs=1e-12)
    bins = reliability_bins(s)
    assert [b.count for b in bins] == [0, 0, 0, 1, 0, 1, 1, 0, 1, 2]
    assert bins[9].confidence == pytest.approx(0.925) and bins[9].accuracy == 1.0
    assert bins[0].confidence is None and bins[0].accuracy is None
    assert (bins[3].lo, bins[3].hi) == (0.3, 0.4)


def test_worked_example_risk_coverage() -> None:
    rc = risk_coverage(CONF, OK)
    # coverage k/6, risk: 0, 0, 1/3, 1/4, 2/5, 1/2
    np.testing.assert_allclose(rc.coverage, np.arange(1, 7) / 6)
    np.testing.assert_allclose(rc.risk, [0, 0, 1 / 3, 1 / 4, 2 / 5, 1 / 2])
    # AURC = (0 + 0 + 1/3 + 1/4 + 2/5 + 1/2) / 6 = 0.247222…
    assert rc.aurc == pytest.approx((1 / 3 + 1 / 4 + 2 / 5 + 1 / 2) / 6, abs=1e-12)
    # r = .5: optimal = .5 + .5·ln .5 = .153426; E-AURC = .247222 − .153426
    assert rc.e_aurc == pytest.approx(0.2472222222 - (0.5 + 0.5 * math.log(0.5)), abs=1e-9)
    assert rc.risk_at_coverage(0.5) == pytest.approx(1 / 3)
    assert rc.coverage_at_risk(0.3) == pytest.approx(4 / 6)
    assert rc.coverage_at_risk(0.0) == pytest.approx(2 / 6)


def test_ties_enter_together() -> None:
    rc = risk_coverage(np.array([0.8, 0.8, 0.6]), np.array([True, False, True]))
    np.testing.assert_allclose(rc.coverage, [2 / 3, 1.0])
    np.testing.assert_allclose(rc.risk, [1 / 2, 1 / 3])
    assert rc.aurc == pytest.approx(2 / 3 * 1 / 2 + 1 / 3 * 1 / 3)


def test_probability_forms() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    y = np.array([0, 2])
    s = ReliabilityStats.from_arrays(
        p.max(axis=1), p.argmax(axis=1) == y, probabilities=p, true_index=y
    )
    # Brier: (.3² + .2² + .1²) = .14 and (.2² + .5² + .7²) = .78 → mean .46
    assert brier(s) == pytest.approx(0.46, abs=1e-12)
    # NLL: (−ln .7 − ln .3) / 2
    assert nll(s) == pytest.approx((-math.log(0.7) - math.log(0.3)) / 2, abs=1e-12)
    # One-vs-rest ECE: class 0 (.3 + .2)/2, class 1 (.2 + .5)/2, class 2 (.1 + .7)/2 → mean 1/3
    assert classwise_ece(p, y) == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.parametrize(
    ("conf", "bins", "expected"),
    [
        (0.0, 10, 0),
        (1.0, 10, 9),
        (0.3, 10, 3),
        (0.7, 10, 7),
        (0.1, 10, 1),
        (0.29, 100, 29),
        (0.999, 1000, 999),
        (0.001, 1000, 1),
    ],
)
def test_bin_edges(conf: float, bins: int, expected: int) -> None:
    assert bin_index(np.array([conf]), bins)[0] == expected


@pytest.mark.parametrize(
    ("conf", "ok", "expected_ece"),
    [
        ([0.7], [True], 0.3),  # one sample
        ([0.9, 0.8], [True, True], (0.1 + 0.2) / 2),  # all correct
        ([0.9, 0.8], [False, False], (0.9 + 0.8) / 2),  # all wrong
        ([1.0, 1.0], [True, True], 0.0),  # perfectly confident and right
        ([0.0], [False], 0.0),  # confidence exactly 0
    ],
)
def test_edge_cases(conf: list[float], ok: list[bool], expected_ece: float) -> None:
    assert ece(ReliabilityStats.from_arrays(np.array(conf), np.array(ok))) == pytest.approx(
        expected_ece
    )


def test_empty_and_invalid() -> None:
    empty = ReliabilityStats.empty()
    assert ece(empty) is None and mce(empty) is None and brier(empty) is None
    assert risk_coverage(np.empty(0), np.empty(0, dtype=bool)).aurc is None
    with pytest.raises(ValueError, match="confidences"):
        bin_index(np.array([1.2]), 10)
    with pytest.raises(ValueError, match="confidences"):
        bin_index(np.array([math.nan]), 10)


def test_all_correct_and_all_wrong_e_aurc() -> None:
    assert risk_coverage(np.array([0.9, 0.5]), np.array([True, True])).e_aurc == pytest.approx(0.0)
    assert risk_coverage(np.array([0.9, 0.5]), np.array([False, False])).e_aurc == pytest.approx(
        0.0
    )


def test_streaming_stats_equal_raw_arrays_on_the_grid() -> None:
    rng = np.random.default_rng(0)
    conf = np.round(rng.uniform(0.3, 1.0, 20_000), 3)
    ok = rng.random(20_000) < conf
    whole = ReliabilityStats.from_arrays(conf, ok)
    parts = [
        ReliabilityStats.from_arrays(conf[i : i + 3_000], ok[i : i + 3_000])
        for i in range(0, 20_000, 3_000)
    ]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged + p
    assert ece(merged) == pytest.approx(ece(whole), abs=1e-12)
    assert brier(merged) == pytest.approx(brier(whole), abs=1e-12)
    hist = ConfidenceHistogram.empty()
    for i in range(0, 20_000, 3_000):
        hist = hist + ConfidenceHistogram.from_arrays(conf[i : i + 3_000], ok[i : i + 3_000])
    raw, streamed = risk_coverage(conf, ok), hist.curve()
    np.testing.assert_allclose(streamed.coverage, raw.coverage, rtol=0, atol=1e-12)
    np.testing.assert_allclose(streamed.risk, raw.risk, rtol=0, atol=1e-12)
    np.testing.assert_allclose(streamed.thresholds, raw.thresholds, atol=1e-12)
    assert streamed.aurc == pytest.approx(raw.aurc, abs=1e-12)
