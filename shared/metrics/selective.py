"""Selective-prediction metrics (docs/architecture.md, "Metric definitions"): the risk–coverage
curve, AURC and E-AURC, from raw arrays or from a fine confidence histogram.

Sort by confidence, highest first. At each DISTINCT confidence τ, coverage = share of
samples with confidence ≥ τ and risk = error rate among them; ties enter together.
AURC = Σ_j (coverage_j − coverage_{j−1})·risk_j (coverage_0 = 0), which is the mean of the
risks at coverage k/N when there are no ties. E-AURC = AURC − (r + (1−r)·ln(1−r)), r the
overall error rate, with (1−r)·ln(1−r) = 0 at r = 1: the excess over an oracle that ranks
every error last.

The streaming form is ``ConfidenceHistogram``: K fine bins [j/K, (j+1)/K) with the edge
rule of ``shared.metrics.confidence_bins``, plus one cell for confidence exactly 1.0, so K + 1 cells
in all. The extra cell is what makes the curve exact: the 1/K grid has K + 1 points
(0, 1/K, …, 1), and with 1.0 folded into the last bin the thresholds 1 − 1/K and 1 would
merge. Each non-empty cell is one threshold, its lower edge j/K, so "coverage = share with
confidence ≥ τ" holds for any data, and the curve equals the raw-array curve exactly when
every confidence lies on the 1/K grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.metrics.confidence_bins import (
    FloatArray,
    IntArray,
    bin_index,
    check_bins,
    outcomes,
    unit_interval,
)

TARGET_TOLERANCE = 1e-12
"""Slack when comparing a curve with a target coverage or risk, so a target written as a
decimal (0.7) is met by 7/10 whatever the last bit of either side."""


def oracle_aurc(error_rate: float) -> float:
    """AURC of a ranking that puts every error last: r + (1−r)·ln(1−r), 1 at r = 1."""
    r = float(error_rate)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"error_rate = {error_rate!r}; expected a number in [0, 1]")
    return r + ((1.0 - r) * math.log1p(-r) if r < 1.0 else 0.0)


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Abstain below ``threshold``: the ``coverage`` kept and its ``risk``."""

    threshold: float
    coverage: float
    risk: float


def _target(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} = {value!r}; expected a number in [0, 1]")
    return v


@dataclass(frozen=True, slots=True)
class RiskCoverage:
    """One point per distinct threshold, thresholds descending, coverage ascending to 1."""

    thresholds: FloatArray
    coverage: FloatArray
    risk: FloatArray

    @property
    def aurc(self) -> float | None:
        """Σ_j (coverage_j − coverage_{j−1})·risk_j; None without samples."""
        if not self.coverage.size:
            return None
        return float((np.diff(self.coverage, prepend=0.0) * self.risk).sum())

    @property
    def overall_risk(self) -> float | None:
        """Error rate of all samples (the risk at coverage 1)."""
        return float(self.risk[-1]) if self.risk.size else None

    @property
    def e_aurc(self) -> float | None:
        """AURC − (r + (1−r)·ln(1−r)), r the overall error rate; None without samples."""
        a, r = self.aurc, self.overall_risk
        return None if a is None or r is None else a - oracle_aurc(r)

    def _point(self, j: int) -> OperatingPoint:
        return OperatingPoint(
            float(self.thresholds[j]), float(self.coverage[j]), float(self.risk[j])
        )

    def point_at_coverage(self, target_coverage: float) -> OperatingPoint | None:
        """The highest threshold whose coverage reaches the target; None without samples."""
        target = _target("target_coverage", target_coverage)
        reach = np.flatnonzero(self.coverage >= target - TARGET_TOLERANCE)
        return self._point(int(reach[0])) if reach.size else None

    def point_at_risk(self, target_risk: float) -> OperatingPoint | None:
        """The point of largest coverage whose risk is at most the target; None if none."""
        target = _target("target_risk", target_risk)
        ok = np.flatnonzero(self.risk <= target + TARGET_TOLERANCE)
        return self._point(int(ok[-1])) if ok.size else None

    def risk_at_coverage(self, target_coverage: float) -> float | None:
        """Selective risk of the smallest threshold set whose coverage ≥ the target."""
        point = self.point_at_coverage(target_coverage)
        return None if point is None else point.risk

    def coverage_at_risk(self, target_risk: float) -> float:
        """Largest coverage whose risk is at most the target; 0 when none is."""
        point = self.point_at_risk(target_risk)
        return 0.0 if point is None else point.coverage


def _curve(thresholds: FloatArray, cum_n: IntArray, cum_errors: IntArray) -> RiskCoverage:
    """The curve from cumulative counts and errors at each threshold, highest first."""
    if not cum_n.size:
        return RiskCoverage(np.empty(0), np.empty(0), np.empty(0))
    return RiskCoverage(thresholds, cum_n / cum_n[-1], cum_errors / cum_n)


def risk_coverage(confidences: npt.ArrayLike, correct: npt.ArrayLike) -> RiskCoverage:
    """The curve of labeled samples, one point per distinct confidence."""
    c = unit_interval("confidences", confidences)
    wrong = ~outcomes("correct", correct, c.size)
    order = np.argsort(-c, kind="stable")
    c_sorted = c[order]
    last_of_tie = np.flatnonzero(np.append(c_sorted[1:] != c_sorted[:-1], True))[: c.size]
    cum_n = (last_of_tie + 1).astype(np.int64)
    cum_errors = np.cumsum(wrong[order], dtype=np.int64)[last_of_tie]
    return _curve(c_sorted[last_of_tie], cum_n, cum_errors)


@dataclass(frozen=True, slots=True)
class ConfidenceHistogram:
    """Per cell (K fine bins, then confidence 1.0): ``count`` of samples, ``errors`` among
    them and ``conf_sum`` of their confidences. Mergeable by ``+``."""

    count: IntArray
    errors: IntArray
    conf_sum: FloatArray

    def __post_init__(self) -> None:
        count = np.asarray(self.count, dtype=np.int64)
        errors = np.asarray(self.errors, dtype=np.int64)
        conf_sum = np.asarray(self.conf_sum, dtype=np.float64)
        if count.ndim != 1 or count.size < 2:
            raise ValueError(f"count must be a 1-d array of K + 1 ≥ 2 cells; got {count.shape}")
        for name, arr in (("errors", errors), ("conf_sum", conf_sum)):
            if arr.shape != count.shape:
                raise ValueError(f"{name} has shape {arr.shape}; expected {count.shape}")
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "conf_sum", conf_sum)

    @property
    def bins(self) -> int:
        """K, the number of fine bins (the cell for 1.0 comes on top)."""
        return len(self.count) - 1

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @classmethod
    def empty(cls, bins: int = 1000) -> ConfidenceHistogram:
        cells = check_bins(bins) + 1
        return cls(np.zeros(cells, np.int64), np.zeros(cells, np.int64), np.zeros(cells))

    @classmethod
    def from_arrays(
        cls, confidences: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 1000
    ) -> ConfidenceHistogram:
        c = unit_interval("confidences", confidences)
        wrong = ~outcomes("correct", correct, c.size)
        cells = check_bins(bins) + 1
        idx = bin_index(c, cells, scale=cells - 1)
        return cls(
            np.bincount(idx, minlength=cells).astype(np.int64),
            np.bincount(idx, wrong, minlength=cells).astype(np.int64),
            np.bincount(idx, c, minlength=cells).astype(np.float64),
        )

    def __add__(self, other: ConfidenceHistogram) -> ConfidenceHistogram:
        return ConfidenceHistogram.merge([self, other], self.bins)

    @classmethod
    def merge(cls, parts: Iterable[ConfidenceHistogram], bins: int = 1000) -> ConfidenceHistogram:
        """The sum of ``parts`` (all with the same K); an empty histogram if none."""
        items = list(parts)
        if not items:
            return cls.empty(bins)
        sizes = {h.bins for h in items}
        if len(sizes) != 1:
            raise ValueError(f"parts must share one number of bins; got {sorted(sizes)}")
        return cls(
            np.sum([h.count for h in items], axis=0),
            np.sum([h.errors for h in items], axis=0),
            np.sum([h.conf_sum for h in items], axis=0),
        )

    def to_lists(self) -> tuple[list[int], list[float]]:
        """Flat form: ints = count + errors, floats = conf_sum (K + 1 cells each)."""
        return [*self.count.tolist(), *self.errors.tolist()], self.conf_sum.tolist()

    @classmethod
    def from_lists(cls, ints: Sequence[int], floats: Sequence[float]) -> ConfidenceHistogram:
        """Inverse of ``to_lists``; K follows from the lengths."""
        cells = len(floats)
        if cells < 2 or len(ints) != 2 * cells:
            raise ValueError(
                f"ints must hold 2·(K + 1) values and floats K + 1 ≥ 2; got {len(ints)} and {cells}"
            )
        i = np.asarray(ints, dtype=np.int64)
        f = np.asarray(floats, dtype=np.float64)
        if (i < 0).any() or (i[cells:] > i[:cells]).any():
            raise ValueError(f"ints must be counts with errors ≤ count; got {list(ints)}")
        if not np.isfinite(f).all():
            raise ValueError(f"floats must be finite; got {list(floats)}")
        return cls(i[:cells], i[cells:], f)

    def curve(self) -> RiskCoverage:
        """The risk–coverage curve, one threshold per non-empty cell: its lower edge j/K."""
        cells = np.flatnonzero(self.count)[::-1]
        return _curve(
            cells / self.bins,
            np.cumsum(self.count[cells]),
            np.cumsum(self.errors[cells]),
        )
