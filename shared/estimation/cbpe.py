"""Confidence-based performance estimation (CBPE), streaming.

With calibrated confidences c_i (P(prediction i is correct) = c_i), the accuracy of a set
of n predictions is a sum of independent Bernoulli(c_i) outcomes over n, so

    expected accuracy  = Σ c_i / n
    sampling variance  = Σ c_i (1 − c_i) / n²

and both follow from three sufficient statistics, (n, Σc, Σc(1−c)), which add across
event-time buckets: the window's estimate is exact whichever buckets make it up. The band
is ±z·sd around the estimate (``DEFAULT_Z`` = 2.576, the two-sided 99 % normal interval):
the realised accuracy of those predictions falls inside it with about that probability
when the scores are calibrated and P(y | x) has not changed.

Once labels arrive, the realised accuracy of the labeled predictions is set beside the
estimate over the same predictions (their own sums, kept when the label joins), and the
gap between them is measured in bands: a gap beyond one band says the calibration map no
longer describes the data (concept drift, or a stale calibrator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.metrics.confidence_bins import outcomes, unit_interval

DEFAULT_Z = 2.576
"""Half-width of the band in standard deviations: the two-sided 99 % normal interval."""


@dataclass(frozen=True, slots=True)
class ConfidenceSums:
    """Sufficient statistics of a set of predictions: count, Σc and Σc(1−c). Mergeable by ``+``."""

    n: int
    conf_sum: float
    var_sum: float

    @classmethod
    def empty(cls) -> ConfidenceSums:
        return cls(0, 0.0, 0.0)

    @classmethod
    def from_confidences(cls, confidences: npt.ArrayLike) -> ConfidenceSums:
        c = unit_interval("confidences", confidences)
        return cls(int(c.size), float(c.sum()), float((c * (1.0 - c)).sum()))

    def __add__(self, other: ConfidenceSums) -> ConfidenceSums:
        return ConfidenceSums(
            self.n + other.n, self.conf_sum + other.conf_sum, self.var_sum + other.var_sum
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected accuracy of ``n`` predictions, its standard deviation and its ±z·sd band."""

    n: int
    accuracy: float
    sd: float
    z: float

    @property
    def band(self) -> float:
        """Half-width of the band: z·sd."""
        return self.z * self.sd

    @property
    def lower(self) -> float:
        return max(0.0, self.accuracy - self.band)

    @property
    def upper(self) -> float:
        return min(1.0, self.accuracy + self.band)

    @property
    def risk(self) -> float:
        """Expected error rate, 1 − accuracy."""
        return 1.0 - self.accuracy


def _check_z(z: float) -> float:
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"z = {z!r}; expected a finite number > 0")
    return float(z)


def estimate(sums: ConfidenceSums, z: float = DEFAULT_Z) -> Estimate | None:
    """The CBPE estimate of a set of predictions; None when the set is empty."""
    z = _check_z(z)
    if sums.n <= 0:
        return None
    n = sums.n
    mean = min(1.0, max(0.0, sums.conf_sum / n))
    return Estimate(n, mean, math.sqrt(max(sums.var_sum, 0.0)) / n, z)


@dataclass(frozen=True, slots=True)
class Realised:
    """The estimate of the labeled predictions beside their realised accuracy."""

    estimate: Estimate
    realised: float
    n_correct: int

    @property
    def gap(self) -> float:
        """Realised − estimated accuracy (negative: the model does worse than its scores say)."""
        return self.realised - self.estimate.accuracy

    @property
    def gap_in_bands(self) -> float:
        """|gap| / band; above 1 the estimate was off by more than its band (inf for a
        zero-width band with a non-zero gap)."""
        band = self.estimate.band
        if band > 0:
            return abs(self.gap) / band
        return 0.0 if abs(self.gap) < 1e-12 else math.inf

    @property
    def outside_band(self) -> bool:
        return self.gap_in_bands > 1.0


def realised(labeled: ConfidenceSums, n_correct: int, z: float = DEFAULT_Z) -> Realised | None:
    """Estimate over the labeled predictions beside their realised accuracy; None without
    labels."""
    est = estimate(labeled, z)
    if est is None:
        return None
    if not 0 <= n_correct <= labeled.n:
        raise ValueError(f"n_correct = {n_correct!r}; expected an integer in [0, {labeled.n}]")
    return Realised(est, n_correct / labeled.n, int(n_correct))


def realised_from_arrays(
    confidences: npt.ArrayLike, correct: npt.ArrayLike, z: float = DEFAULT_Z
) -> Realised | None:
    """:func:`realised` of raw arrays (for tests and offline use)."""
    c = unit_interval("confidences", confidences)
    ok = outcomes("correct", correct, c.size)
    return realised(ConfidenceSums.from_confidences(c), int(np.count_nonzero(ok)), z)


def drop_in_bands(current: Estimate, reference: Estimate) -> float:
    """How far the current estimate fell below the reference one, in units of the band of
    their difference, z·sqrt(sd_cur² + sd_ref²); ≤ 0 when it did not fall."""
    drop = reference.accuracy - current.accuracy
    band = current.z * math.hypot(current.sd, reference.sd)
    if band > 0:
        return drop / band
    return 0.0 if drop <= 1e-12 else math.inf
