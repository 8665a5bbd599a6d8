"""Before-labels estimation (CBPE) and guaranteed-risk thresholds, on generated data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.estimation.cbpe import (
    DEFAULT_Z,
    ConfidenceSums,
    drop_in_bands,
    estimate,
    realised,
    realised_from_arrays,
)
from shared.estimation.risk_threshold import GRID, advise, grid_counts, selective_risk
from shared.metrics.selective import ConfidenceHistogram


def test_estimate_hand_computed() -> None:
    sums = ConfidenceSums.from_confidences([0.9, 0.8, 0.5, 1.0])
    # Σc = 3.2, Σc(1−c) = 0.09 + 0.16 + 0.25 + 0 = 0.5
    assert sums.n == 4
    assert sums.conf_sum == pytest.approx(3.2)
    assert sums.var_sum == pytest.approx(0.5)
    est = estimate(sums, z=2.0)
    assert est is not None
    assert est.accuracy == pytest.approx(0.8)
    assert est.sd == pytest.approx(math.sqrt(0.5) / 4)
    assert est.band == pytest.approx(2 * math.sqrt(0.5) / 4)
    assert est.upper == 1.0  # clamped
    assert estimate(ConfidenceSums.empty()) is None


def test_sums_merge_like_the_concatenation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=50), rng.uniform(size=70)
    merged = ConfidenceSums.from_confidences(a) + ConfidenceSums.from_confidences(b)
    whole = ConfidenceSums.from_confidences(np.concatenate([a, b]))
    assert merged.n == whole.n
    assert merged.conf_sum == pytest.approx(whole.conf_sum)
    assert merged.var_sum == pytest.approx(whole.var_sum)


def test_realised_gap_hand_computed() -> None:
    r = realised(ConfidenceSums(4, 3.2, 0.5), n_correct=2, z=1.0)
    assert r is not None
    assert r.realised == 0.5
    assert r.gap == pytest.approx(-0.3)
    assert r.gap_in_bands == pytest.approx(0.3 / (math.sqrt(0.5) / 4))
    assert r.outside_band
    with pytest.raises(ValueError, match="n_correct"):
        realised(ConfidenceSums(4, 3.2, 0.5), n_correct=5)


def _calibrated_window(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(200, 3000))
    c = rng.beta(6.0, 1.5, size=n)
    return c, rng.uniform(size=n) < c


def test_estimate_within_band_in_95_percent_of_200_windows() -> None:
    inside = {DEFAULT_Z: 0, 1.96: 0}
    for seed in range(200):
        c, correct = _calibrated_window(np.random.default_rng(seed))
        for z in inside:
            r = realised_from_arrays(c, correct, z=z)
            assert r is not None
            inside[z] += not r.outside_band
    rates = {z: k / 200 for z, k in inside.items()}
    print(f"estimate within its band of realised: {rates}")
    assert rates[DEFAULT_Z] >= 0.95
    assert rates[1.96] >= 0.90  # nominal 95 %: reported, loosely checked


def test_over_confident_model_without_calibrator_reports_the_gap() -> None:
    rng = np.random.default_rng(7)
    raw = rng.beta(8.0, 1.2, size=5000)
    correct = rng.uniform(size=raw.size) < raw**4  # true accuracy well below the scores
    r = realised_from_arrays(raw, correct)
    assert r is not None
    assert r.gap < 0
    assert r.outside_band


def test_drop_in_bands() -> None:
    ref = estimate(ConfidenceSums(1000, 900.0, 90.0), z=2.0)
    cur = estimate(ConfidenceSums(1000, 800.0, 160.0), z=2.0)
    assert ref is not None and cur is not None
    band = 2.0 * math.hypot(math.sqrt(90.0) / 1000, math.sqrt(160.0) / 1000)
    assert drop_in_bands(cur, ref) == pytest.approx(0.1 / band)
    assert drop_in_bands(ref, cur) < 0


def test_grid_counts_are_tails_of_the_histogram() -> None:
    h = ConfidenceHistogram.from_arrays([0.005, 0.5, 0.505, 0.999, 1.0], [1, 0, 1, 1, 1])
    thresholds, n, e = grid_counts(h)
    assert thresholds[50] == 0.5
    assert (n[0], e[0]) == (5, 1)
    assert (n[50], e[50]) == (4, 1)
    assert (n[51], e[51]) == (2, 0)
    assert (n[100], e[100]) == (1, 0)


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    c = rng.beta(5.0, 1.0, size=n)
    return c, rng.uniform(size=n) < c


def test_threshold_advice_holds_its_risk_in_all_but_delta_of_500_draws() -> None:
    target, delta = 0.05, 0.1
    fresh_c, fresh_ok = _draw(np.random.default_rng(10_000), 2_000_000)
    fresh = ConfidenceHistogram.from_arrays(fresh_c, fresh_ok)
    exceed = advised = 0
    for seed in range(500):
        c, ok = _draw(np.random.default_rng(seed), 3000)
        adv = advise(ConfidenceHistogram.from_arrays(c, ok), target, delta)
        if adv.threshold is None:
            continue
        advised += 1
        assert adv.risk_bound is not None and adv.risk_bound <= target
        risk = selective_risk(fresh, adv.threshold)
        assert risk is not None
        exceed += risk > target
    print(f"advised {advised}/500, realised risk above target in {exceed / 500:.4f}")
    assert advised >= 450  # the method has power at this size
    assert exceed / 500 <= delta


def test_threshold_advice_hand_checked() -> None:
    # 1000 events at confidence 0.95 with 10 errors, 1000 at 0.60 with 400 errors.
    c = np.r_[np.full(1000, 0.95), np.full(1000, 0.60)]
    ok = np.r_[np.arange(1000) >= 10, np.arange(1000) >= 400]
    adv = advise(ConfidenceHistogram.from_arrays(c, ok), target_risk=0.05, delta=0.05)
    # Every threshold in (0.60, 0.95] accepts the 0.95 events only; the lowest is 0.61.
    assert adv.threshold == 0.61
    assert adv.n_accepted == 1000 and adv.errors_accepted == 10
    assert adv.coverage == 0.5 and adv.review_rate == 0.5
    assert adv.n_labeled == 2000
    assert adv.risk_bound is not None and 0.01 < adv.risk_bound <= 0.05
    assert adv.reason is None


def test_target_below_best_achievable_risk_is_null_with_reason() -> None:
    rng = np.random.default_rng(3)
    c = np.full(5000, 0.9)
    ok = rng.uniform(size=c.size) < 0.9
    adv = advise(ConfidenceHistogram.from_arrays(c, ok), target_risk=0.01, delta=0.05)
    assert adv.threshold is None and adv.coverage is None
    assert adv.reason is not None and "below the best achievable" in adv.reason
    assert adv.best_achievable_risk == pytest.approx(1 - ok.mean())


def test_too_few_labels_is_null_with_reason() -> None:
    adv = advise(ConfidenceHistogram.from_arrays([0.99] * 20, [1] * 20), 0.02, 0.05)
    assert adv.threshold is None
    assert adv.reason is not None and "too few labeled events" in adv.reason
    empty = advise(ConfidenceHistogram.empty(), 0.02, 0.05)
    assert empty.reason == "no labeled events in the window" and empty.n_labeled == 0


@pytest.mark.parametrize("field", ["target_risk", "delta"])
@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_bad_input_names_the_field(field: str, value: float) -> None:
    args = {"target_risk": 0.02, "delta": 0.05, field: value}
    with pytest.raises(ValueError, match=field):
        advise(ConfidenceHistogram.empty(), **args)


def test_grid_must_divide_bins() -> None:
    with pytest.raises(ValueError, match="multiple of grid"):
        grid_counts(ConfidenceHistogram.empty(30), GRID)
