"""Drift statistics (docs/architecture.md, "Metric definitions"), from reference proportions and
current counts, so a streaming worker needs only the histograms it keeps in Redis.

Every function takes the reference as proportions (non-negative, normalised here) and the
current window as counts over the same cells; ``shared.drift.profile`` defines the cells.

Floor: wherever a proportion enters a logarithm or a denominator (PSI on both sides, the
expected shares of chi-squared), it is raised to ``PROPORTION_FLOOR`` = 1e-4 and NOT
renormalised afterwards. One rule for all statistics keeps the numbers checkable by hand
(an empty current bin counts as 1e-4, nothing else moves); the floored vector then sums to
at most 1 + cells·1e-4, and every PSI term (c − r)·ln(c/r) stays non-negative, so PSI ≥ 0
and identical proportions give exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special, stats

FloatArray = npt.NDArray[np.float64]
PROPORTION_FLOOR = 1e-4
CRITICAL_FACTOR = 1.5
"""A score at or above ``CRITICAL_FACTOR × threshold`` is critical (docs/architecture.md,
"Metric definitions")."""
BOUNDARY_TOLERANCE = 1e-9
"""Relative slack at the severity boundaries, so a decimal threshold written as 0.2 makes
a score of 0.3 critical although 1.5·0.2 = 0.30000000000000004 in binary floating point."""

Severity = Literal["warning", "critical"]


def _shares(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` normalised to sum 1; raises when they are negative, non-finite or all zero."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or not v.size:
        raise ValueError(f"{name} must be a non-empty 1-d array; got shape {v.shape}")
    if not np.all(np.isfinite(v)) or v.min() < 0:
        raise ValueError(f"{name} must be finite and non-negative; got {v.tolist()}")
    total = v.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0; at least one sample is needed")
    shares: FloatArray = v / total
    return shares


def _pair(reference: npt.ArrayLike, current_counts: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    ref = _shares("reference proportions", reference)
    cur = _shares("current counts", current_counts)
    if ref.shape != cur.shape:
        raise ValueError(
            f"reference has {ref.size} cells and current counts {cur.size}; they must match"
        )
    return ref, cur


def psi(
    reference: npt.ArrayLike, current_counts: npt.ArrayLike, floor: float = PROPORTION_FLOOR
) -> float:
    """Population stability index Σ (cur − ref)·ln(cur/ref), both sides floored at ``floor``
    (no renormalisation)."""
    ref, cur = _pair(reference, current_counts)
    r = np.maximum(ref, floor)
    c = np.maximum(cur, floor)
    return float(((c - r) * np.log(c / r)).sum())


def js_distance(reference: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Jensen–Shannon distance with base-2 logarithms, so it lies in [0, 1]: 0 for identical
    histograms, 1 for histograms with no cell in common. No floor is needed (the mixture is
    positive wherever either side is)."""
    ref, cur = _pair(reference, current_counts)
    mix = (ref + cur) / 2.0
    divergence = (special.rel_entr(ref, mix).sum() + special.rel_entr(cur, mix).sum()) / 2.0
    # Rounding can leave a divergence a few ulps below 0 or above ln 2.
    return float(np.sqrt(np.clip(divergence / math.log(2.0), 0.0, 1.0)))


def ks_from_histograms(reference: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic max |CDF_ref − CDF_cur| over the cell edges.

    It never exceeds the exact two-sample statistic of the raw values and falls short of it
    by at most the largest share one cell holds on either side (inside a cell both CDFs are
    unknown but monotone)."""
    ref, cur = _pair(reference, current_counts)
    return float(np.abs(np.cumsum(ref) - np.cumsum(cur))[:-1].max(initial=0.0))


def ks_exact(reference_values: npt.ArrayLike, current_values: npt.ArrayLike) -> float:
    """The exact two-sample KS statistic of raw values (scipy.stats.ks_2samp); a reference
    for tests and offline checks, not for the streaming path."""
    ref = np.asarray(reference_values, dtype=np.float64)
    cur = np.asarray(current_values, dtype=np.float64)
    return float(stats.ks_2samp(ref, cur).statistic)


@dataclass(frozen=True, slots=True)
class ChiSquared:
    statistic: float
    """Pearson's Σ (O − E)²/E with E = n · max(reference share, floor)."""
    p_value: float
    """P(χ²_dof ≥ statistic) under "the current window is drawn from the reference"."""
    dof: int
    n: int
    """Current sample count."""

    @property
    def effect_size(self) -> float:
        """Cohen's w = √(χ²/n): the drift score compared with a threshold. It does not grow
        with the window size as χ² does (0.1 small, 0.3 medium, 0.5 large by Cohen's
        convention); an unseen category holding a share s of the window alone adds s²/1e-4
        to w², i.e. w ≥ 100·s."""
        return math.sqrt(self.statistic / self.n) if self.n else 0.0


def chi_squared(
    reference: npt.ArrayLike, current_counts: npt.ArrayLike, floor: float = PROPORTION_FLOOR
) -> ChiSquared:
    """Goodness-of-fit chi-squared of current counts against the reference shares.

    The reference is taken as the true distribution (its own sampling error is ignored,
    which suits a reference much larger than a window). Expected counts are n · max(share,
    floor), not renormalised, so an unseen category (reference share 0) has expected
    n·1e-4 instead of dividing by zero. Cells where the reference share is 0 AND nothing was
    observed carry no information and are left out; with k cells left, dof = k − 1 (a
    single cell gives χ² = 0, dof 0 and p = 1). The p-value is scipy.stats.chi2.sf.
    """
    ref, _ = _pair(reference, current_counts)
    observed = np.asarray(current_counts, dtype=np.float64)
    total = float(observed.sum())
    used = (ref > 0) | (observed > 0)
    expected = total * np.maximum(ref[used], floor)
    statistic = float(((observed[used] - expected) ** 2 / expected).sum())
    dof = int(used.sum()) - 1
    n = round(total)
    if dof < 1:
        return ChiSquared(0.0, 1.0, 0, n)
    return ChiSquared(statistic, float(stats.chi2.sf(statistic, dof)), dof, n)


def severity(score: float, threshold: float) -> Severity | None:
    """``"critical"`` when score ≥ 1.5·threshold, ``"warning"`` when score ≥ threshold, else
    None (also for a NaN score). Scores are "larger = more drift"; both boundaries count as
    reached (with a relative slack of 1e-9 for decimal thresholds)."""
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold is {threshold!r}; expected a finite number > 0")
    slack = 1.0 - BOUNDARY_TOLERANCE
    if score >= CRITICAL_FACTOR * threshold * slack:
        return "critical"
    if score >= threshold * slack:
        return "warning"
    return None
