"""Selective-prediction metrics (DESIGN.md, "Metric definitions"): risk–coverage and AURC.

Sort by confidence, highest first. At each DISTINCT confidence τ, coverage = share of
samples with confidence ≥ τ and risk = error rate among them; ties enter together.
AURC = Σ_j (coverage_j − coverage_{j−1})·risk_j. E-AURC = AURC − (r + (1−r)·ln(1−r)) with r
the overall error rate: the excess over an oracle that ranks every error last.

The streaming form is a fine confidence histogram (``ConfidenceHistogram``): K bins
[i/K, (i+1)/K) plus one cell for confidence exactly 1.0, so every point of the 1/K grid
has a cell of its own. Each non-empty cell is one threshold, and the curve equals the
raw-array curve exactly when confidences lie on the 1/K grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.calibration import bin_index

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class RiskCoverage:
    thresholds: FloatArray
    coverage: FloatArray
    risk: FloatArray

    @property
    def aurc(self) -> float | None:
        if not len(self.coverage):
            return None
        steps = np.diff(self.coverage, prepend=0.0)
        return float((steps * self.risk).sum())

    @property
    def overall_risk(self) -> float | None:
        return float(self.risk[-1]) if len(self.risk) else None

    @property
    def e_aurc(self) -> float | None:
        a, r = self.aurc, self.overall_risk
        if a is None or r is None:
            return None
        optimal = r + ((1.0 - r) * math.log(1.0 - r) if r < 1.0 else 0.0)
        return a - optimal

    def risk_at_coverage(self, target: float) -> float | None:
        """Risk of the smallest threshold set whose coverage reaches ``target``."""
        reach = np.flatnonzero(self.coverage >= target - 1e-12)
        return float(self.risk[reach[0]]) if len(reach) else None

    def coverage_at_risk(self, target: float) -> float:
        """Largest coverage whose risk is at most ``target`` (0 when none is)."""
        ok = self.risk <= target + 1e-12
        return float(self.coverage[ok].max()) if ok.any() else 0.0


def risk_coverage(confidences: FloatArray, correct: npt.NDArray[np.bool_]) -> RiskCoverage:
    """The curve from raw arrays, one point per distinct confidence."""
    c = np.asarray(confidences, dtype=np.float64)
    errors = ~np.asarray(correct, dtype=np.bool_)
    if not len(c):
        return RiskCoverage(np.empty(0), np.empty(0), np.empty(0))
    thresholds, inverse = np.unique(-c, return_inverse=True)  # ascending −c = descending c
    counts = np.bincount(inverse)
    errs = np.bincount(inverse, errors.astype(np.float64)).astype(np.float64)
    return _curve(-thresholds, counts, errs)


def _curve(
    thresholds: FloatArray, counts: npt.NDArray[np.int64] | FloatArray, errors: FloatArray
) -> RiskCoverage:
    cum_n = np.cumsum(counts).astype(np.float64)
    cum_e = np.cumsum(errors).astype(np.float64)
    return RiskCoverage(thresholds, cum_n / cum_n[-1], cum_e / cum_n)


@dataclass(slots=True)
class ConfidenceHistogram:
    """Counts, errors and confidence sums in K fine bins; mergeable by ``+``."""

    count: IntArray
    errors: IntArray
    conf_sum: FloatArray

    @classmethod
    def empty(cls, bins: int = 1000) -> ConfidenceHistogram:
        return cls(np.zeros(bins + 1, np.int64), np.zeros(bins + 1, np.int64), np.zeros(bins + 1))

    @classmethod
    def from_arrays(
        cls, confidences: FloatArray, correct: npt.NDArray[np.bool_], bins: int = 1000
    ) -> ConfidenceHistogram:
        c = np.asarray(confidences, dtype=np.float64)
        idx = bin_index(c, bins + 1, scale=bins)
        wrong = (~np.asarray(correct, dtype=np.bool_)).astype(np.int64)
        return cls(
            np.bincount(idx, minlength=bins + 1).astype(np.int64),
            np.bincount(idx, wrong, minlength=bins + 1).astype(np.int64),
            np.bincount(idx, c, minlength=bins + 1).astype(np.float64),
        )

    def __add__(self, other: ConfidenceHistogram) -> ConfidenceHistogram:
        return ConfidenceHistogram(
            self.count + other.count, self.errors + other.errors, self.conf_sum + other.conf_sum
        )

    def curve(self) -> RiskCoverage:
        """One threshold per non-empty fine bin (its mean confidence), highest first."""
        nz = np.flatnonzero(self.count)[::-1]
        if not len(nz):
            return RiskCoverage(np.empty(0), np.empty(0), np.empty(0))
        thresholds = self.conf_sum[nz] / self.count[nz]
        return _curve(thresholds, self.count[nz], self.errors[nz].astype(np.float64))
