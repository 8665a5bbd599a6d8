"""Drift statistics from counts against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from shared.drift.stats import (
    chi_squared,
    js_distance,
    ks_exact,
    ks_from_histograms,
    psi,
    severity,
)


def test_psi_with_an_empty_current_bin() -> None:
    # ref [.25, .25, .5]; current counts [0, 40, 60] → [0 → floored 1e-4, .4, .6], no renormalising
    #   (1e-4 − .25)·ln(1e-4/.25) = −.2499·−7.824046 = 1.955229
    #   (.4 − .25)·ln(.4/.25)     = .15·.470004      = 0.070501
    #   (.6 − .5)·ln(.6/.5)       = .1·.182322       = 0.018232
    # PSI = 2.043962
    assert psi([0.25, 0.25, 0.5], [0, 40, 60]) == pytest.approx(2.0439617982, abs=1e-9)


def test_psi_four_bins_no_floor() -> None:
    # ref [.1, .2, .3, .4]; current [20, 20, 30, 30]/100 = [.2, .2, .3, .3]
    #   .1·ln 2 = .069315;  0;  0;  −.1·ln .75 = .028768   → PSI = .098083
    assert psi([0.1, 0.2, 0.3, 0.4], [20, 20, 30, 30]) == pytest.approx(0.0980829253, abs=1e-9)


def test_psi_floors_the_reference_side_too() -> None:
    # ref [0 → 1e-4, .5, .5]; current [10, 45, 45]/100 = [.1, .45, .45]
    #   (.1 − 1e-4)·ln(.1/1e-4) = .0999·6.907755 = .690085
    #   2·(.45 − .5)·ln(.45/.5) = 2·.05·.105361  = .010536   → PSI = .700621
    assert psi([0.0, 0.5, 0.5], [10, 45, 45]) == pytest.approx(0.7006208039, abs=1e-9)


@pytest.mark.parametrize(
    ("reference", "counts"),
    [([0.25, 0.25, 0.5], [1, 1, 2]), ([0.1] * 10, [7] * 10), ([0.0, 1.0, 0.0], [0, 300, 0])],
)
def test_psi_of_identical_distributions_is_zero(reference: list[float], counts: list[int]) -> None:
    assert psi(reference, counts) == 0.0


def test_psi_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="3 cells and current counts 2"):
        psi([0.2, 0.3, 0.5], [1, 2])
    with pytest.raises(ValueError, match="sums to 0"):
        psi([0.5, 0.5], [0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        psi([0.5, 0.5], [-1, 3])


def test_js_distance_identical_disjoint_and_worked() -> None:
    assert js_distance([0.2, 0.3, 0.5], [20, 30, 50]) == 0.0
    assert js_distance([0.5, 0.5, 0.0, 0.0], [0, 0, 3, 7]) == pytest.approx(1.0, abs=1e-12)
    # p = [.5, .5], q = [1, 0], m = [.75, .25]
    #   KL(p‖m) = .5·log2(.5/.75) + .5·log2(.5/.25) = −.292481 + .5 = .207519
    #   KL(q‖m) = log2(1/.75) = .415037
    #   JS divergence = (.207519 + .415037)/2 = .311278;  distance = √.311278 = .557923
    assert js_distance([0.5, 0.5], [1, 0]) == pytest.approx(0.5579230453, abs=1e-9)


def test_js_distance_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref = rng.dirichlet(np.ones(12))
        cur = rng.integers(0, 50, 12)
        expected = jensenshannon(ref, cur / cur.sum(), base=2)
        assert js_distance(ref, cur) == pytest.approx(expected, abs=1e-12)


def test_ks_from_histograms_worked() -> None:
    # ref [.2, .3, .5] → CDF at the edges .2, .5;  current [5, 1, 4]/10 → .5, .6
    # |.2 − .5| = .3, |.5 − .6| = .1  → KS = .3
    assert ks_from_histograms([0.2, 0.3, 0.5], [5, 1, 4]) == pytest.approx(0.3, abs=1e-12)
    assert ks_from_histograms([0.2, 0.3, 0.5], [2, 3, 5]) == pytest.approx(0.0, abs=1e-12)
    assert ks_from_histograms([1.0, 0.0], [0, 9]) == 1.0


@pytest.mark.parametrize(("seed", "shift"), [(1, 0.0), (2, 0.1), (3, 0.5), (4, 2.0)])
def test_ks_from_histograms_agrees_with_ks_2samp(seed: int, shift: float) -> None:
    # On a fine grid the histogram statistic (max over the edges) is at most the exact one
    # and short of it by at most the largest share a single cell holds on either side.
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=4000)
    cur = rng.normal(loc=shift, size=3000)
    lo, hi = np.quantile(ref, [0.001, 0.999])
    edges = np.linspace(lo, hi, 201)
    ref_counts = np.bincount(np.searchsorted(edges, ref), minlength=202)
    cur_counts = np.bincount(np.searchsorted(edges, cur), minlength=202)
    hist = ks_from_histograms(ref_counts / ref.size, cur_counts)
    exact = ks_exact(ref, cur)
    one_cell = max((ref_counts / ref.size).max(), (cur_counts / cur.size).max())
    # Observed: exact − hist between 0.0012 and 0.0021, one_cell 0.016 (0.21 for shift 2,
    # where the current overflow cell holds 21 %).
    assert hist <= exact + 1e-12
    assert exact - hist <= one_cell


def test_ks_exact() -> None:
    assert ks_exact([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 1.0
    # [1, 2, 3, 4] vs [3, 4, 5, 6]: at x = 2 the CDFs are .5 and 0
    assert ks_exact([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]) == pytest.approx(0.5)


def test_chi_squared_worked() -> None:
    # E = 100·[.5, .5] = [50, 50];  χ² = 10²/50 + 10²/50 = 4, dof 1
    # p = P(χ²₁ ≥ 4) = 2·(1 − Φ(2)) = .0455003;  w = √(4/100) = .2
    test = chi_squared([0.5, 0.5], [60, 40])
    assert test.statistic == pytest.approx(4.0, abs=1e-12)
    assert (test.dof, test.n) == (1, 100)
    assert test.p_value == pytest.approx(0.0455002639, abs=1e-9)
    assert test.effect_size == pytest.approx(0.2, abs=1e-12)


def test_chi_squared_with_an_unseen_category() -> None:
    # categories a, b, c, __other__ with reference shares .5, .3, .2, 0; current 40, 30, 20 and
    # 10 of a category the reference never saw (counted in __other__), n = 100.
    # E = 100·max(share, 1e-4) = [50, 30, 20, .01] (floored, not renormalised)
    # χ² = 10²/50 + 0 + 0 + (10 − .01)²/.01 = 2 + 9980.01 = 9982.01; 4 cells → dof 3
    # w = √(9982.01/100) = 9.991001
    test = chi_squared([0.5, 0.3, 0.2, 0.0], [40, 30, 20, 10])
    assert test.statistic == pytest.approx(9982.01, abs=1e-6)
    assert test.dof == 3
    assert test.p_value < 1e-100
    assert test.effect_size == pytest.approx(9.9910009509, abs=1e-9)


def test_chi_squared_ignores_cells_empty_on_both_sides() -> None:
    # __other__ has share 0 and no count: it neither adds to χ² nor to the dof
    test = chi_squared([0.5, 0.5, 0.0], [50, 50, 0])
    assert (test.statistic, test.dof, test.p_value) == (0.0, 1, 1.0)
    single = chi_squared([1.0, 0.0], [7, 0])
    assert (single.statistic, single.dof, single.p_value) == (0.0, 0, 1.0)


@pytest.mark.parametrize(
    ("score", "threshold", "expected"),
    [
        (0.2, 0.2, "warning"),  # exactly at the threshold
        (0.3, 0.2, "critical"),  # exactly 1.5 × 0.2 (0.30000000000000004 in binary)
        (1.5 * 0.2, 0.2, "critical"),
        (0.15, 0.1, "critical"),
        (0.2 - 1e-6, 0.2, None),
        (0.3 - 1e-6, 0.2, "warning"),
        (0.0, 0.2, None),
        (7.0, 0.2, "critical"),
        (float("nan"), 0.2, None),
    ],
)
def test_severity_boundaries(score: float, threshold: float, expected: str | None) -> None:
    assert severity(score, threshold) == expected


@pytest.mark.parametrize("threshold", [0.0, -0.1, math.inf, math.nan])
def test_severity_needs_a_positive_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        severity(0.5, threshold)
