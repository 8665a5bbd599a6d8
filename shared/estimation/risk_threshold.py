"""An abstain threshold that carries a risk guarantee.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei, 2021) over a grid of
candidate thresholds fixed before the data, λ_j = j/G (j = 0 … G, ``GRID`` = 100, so
steps of 0.01 and G + 1 = 101 candidates). For each λ_j the null hypothesis is "the
selective risk of the predictions with confidence ≥ λ_j exceeds the target r". Among the
n_j labeled events at or above λ_j, k_j are errors; the exact binomial p-value
P(Binomial(n_j, r) ≤ k_j) (the Clopper–Pearson tail) is valid for every risk ≥ r. The
family is controlled by Bonferroni: H_j is rejected when p_j ≤ δ/(G + 1). Then, with
probability at least 1 − δ, EVERY rejected λ_j has selective risk ≤ r, so the lowest
rejected one, the advice, does too.

Bonferroni rather than fixed-sequence testing from the highest threshold down: the highest
thresholds hold few events, so a fixed sequence stops at its first step (p ≈ 1) for any
model whose top confidences are rare, and advises nothing; Bonferroni over 101 points
costs a factor of about log(101) inside the bound and never stalls.

Assumption: the labeled events of the window and the predictions the threshold will be
applied to are exchangeable (drawn from one distribution: no drift between them), and the
labeled events are a random sample of the predictions (labels not chosen by confidence).
The risk guaranteed is that of the population, not of one future window's realisation.

Thresholds are on the confidence the histogram was binned on; the aggregator bins the
CALIBRATED confidence for this, the one the policy compares with the model version's
threshold (auto when calibrated ≥ threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom

from shared.metrics.selective import ConfidenceHistogram

GRID = 100
"""Candidate thresholds j/GRID, j = 0 … GRID."""
METHOD = "learn-then-test, exact binomial p-value, Bonferroni over 101 thresholds (0.00 … 1.00)"
ASSUMPTION = (
    "the window's labeled events and the predictions the threshold is applied to are "
    "exchangeable (same distribution, labels not chosen by confidence)"
)


@dataclass(frozen=True, slots=True)
class ThresholdAdvice:
    """The lowest threshold whose selective risk is ≤ ``target_risk`` with probability
    ≥ 1 − ``delta``; ``threshold`` None (with ``reason``) when the window cannot support it."""

    target_risk: float
    delta: float
    n_labeled: int
    threshold: float | None
    coverage: float | None
    """Share of the labeled events at or above the threshold."""
    review_rate: float | None
    n_accepted: int
    errors_accepted: int
    empirical_risk: float | None
    risk_bound: float | None
    """Upper confidence bound on the selective risk at level 1 − δ/(G + 1)."""
    best_achievable_risk: float | None
    """Lowest empirical selective risk over the candidate thresholds."""
    reason: str | None
    method: str = METHOD
    assumption: str = ASSUMPTION


def check_unit_open(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is in (0, 1)."""
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} = {value!r}; expected a number in (0, 1)")
    return v


def _upper_bound(n: int, k: int, level: float) -> float:
    """Clopper–Pearson upper bound on a binomial rate at confidence 1 − ``level``."""
    if k >= n:
        return 1.0
    return float(beta.ppf(1.0 - level, k + 1, n - k))


def grid_counts(histogram: ConfidenceHistogram, grid: int = GRID) -> tuple[np.ndarray, ...]:
    """(thresholds, accepted counts, accepted errors) for λ_j = j/grid, j = 0 … grid.

    λ_j's accepted set is every cell from index j·K/grid up (K the histogram's bins, a
    multiple of ``grid``), so the counts are exact for the binning rule."""
    k = histogram.bins
    if k % grid:
        raise ValueError(f"histogram bins = {k}; expected a multiple of grid = {grid}")
    tail_n = np.cumsum(histogram.count[::-1])[::-1]
    tail_e = np.cumsum(histogram.errors[::-1])[::-1]
    cells = np.arange(grid + 1) * (k // grid)
    return np.arange(grid + 1) / grid, tail_n[cells], tail_e[cells]


def advise(
    histogram: ConfidenceHistogram, target_risk: float, delta: float, grid: int = GRID
) -> ThresholdAdvice:
    """The guaranteed-risk threshold of a histogram of labeled events (see the module doc)."""
    r = check_unit_open("target_risk", target_risk)
    d = check_unit_open("delta", delta)
    thresholds, n, e = grid_counts(histogram, grid)
    total = int(n[0])
    level = d / (grid + 1)
    empty = ThresholdAdvice(r, d, total, None, None, None, 0, 0, None, None, None, None)
    if total == 0:
        return _with(empty, reason="no labeled events in the window")
    has = n > 0
    risks = np.where(has, e / np.maximum(n, 1), np.inf)
    best = float(risks.min())
    p = np.where(has, binom.cdf(e, n, r), 1.0)
    rejected = np.flatnonzero(p <= level)
    if rejected.size == 0:
        if best > r:
            j = int(np.argmin(risks))
            reason = (
                f"target_risk {r:g} is below the best achievable selective risk {best:.4g} "
                f"(threshold {thresholds[j]:.2f}, {int(n[j])} labeled events accepted)"
            )
        else:
            bounds = [_upper_bound(int(n[j]), int(e[j]), level) for j in np.flatnonzero(has)]
            reason = (
                f"too few labeled events to guarantee target_risk {r:g} with probability "
                f"{1 - d:g}: the tightest {1 - level:.4g} upper bound on any threshold's "
                f"selective risk is {min(bounds):.4g} ({total} labeled events)"
            )
        return _with(empty, best_achievable_risk=best, reason=reason)
    j = int(rejected[0])  # lowest threshold rejected
    nj, ej = int(n[j]), int(e[j])
    return ThresholdAdvice(
        r,
        d,
        total,
        float(thresholds[j]),
        nj / total,
        1.0 - nj / total,
        nj,
        ej,
        ej / nj,
        _upper_bound(nj, ej, level),
        best,
        None,
    )


def _with(advice: ThresholdAdvice, **changes: object) -> ThresholdAdvice:
    fields = {f: getattr(advice, f) for f in advice.__dataclass_fields__}
    fields.update(changes)
    return ThresholdAdvice(**fields)


def selective_risk(histogram: ConfidenceHistogram, threshold: float) -> float | None:
    """Empirical selective risk of the events at or above ``threshold`` (on the 1/K grid)."""
    cell = math.floor(threshold * histogram.bins + 1e-9)
    n = int(histogram.count[cell:].sum())
    return None if n == 0 else int(histogram.errors[cell:].sum()) / n
