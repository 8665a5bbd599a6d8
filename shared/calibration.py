"""Calibration metrics (DESIGN.md, "Metric definitions"), from raw arrays or from the
sufficient statistics a streaming aggregator keeps.

Only labeled predictions count; ``correct`` means ground truth equals the predicted label.

Binning: M equal-width bins, bin i = [i/M, (i+1)/M), confidence 1.0 in the last bin. The
index is ``floor(c·M + 1e-9)`` so a confidence written on a decimal edge (0.3, 0.7) lands in
the bin that starts there despite binary floating point (0.7·10 = 7.000000000000001 and
0.3·10 = 3.0000000000000004 are fine, but 0.29·100 = 28.999999999999996 is not without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
EDGE_TOLERANCE = 1e-9
NLL_FLOOR = 1e-12
"""Probabilities are clipped at this floor before the log, so NLL stays finite."""


def _check_unit(name: str, values: FloatArray) -> None:
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} must be finite numbers in [0, 1]")


def bin_index(confidences: FloatArray, bins: int, scale: int | None = None) -> IntArray:
    """Bin of each confidence: floor(c·scale) capped at ``bins − 1`` (scale = bins: 1.0 in
    the last bin; scale = bins − 1: 1.0 in a cell of its own)."""
    c = np.asarray(confidences, dtype=np.float64)
    _check_unit("confidences", c)
    return np.minimum(np.floor(c * (scale or bins) + EDGE_TOLERANCE).astype(np.int64), bins - 1)


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    lo: float
    hi: float
    confidence: float | None
    """Mean confidence of the bin's samples; None when empty."""
    accuracy: float | None
    count: int


@dataclass(slots=True)
class ReliabilityStats:
    """Sufficient statistics of calibration: per-bin counts and sums, plus Brier/NLL sums.

    Mergeable by ``+``; every metric below is computed from them alone.
    """

    count: IntArray
    conf_sum: FloatArray
    correct_sum: IntArray
    brier_sum: float = 0.0
    nll_sum: float = 0.0
    nll_count: int = 0

    @property
    def bins(self) -> int:
        return len(self.count)

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @classmethod
    def empty(cls, bins: int = 10) -> ReliabilityStats:
        return cls(np.zeros(bins, np.int64), np.zeros(bins), np.zeros(bins, np.int64))

    @classmethod
    def from_arrays(
        cls,
        confidences: FloatArray,
        correct: npt.NDArray[np.bool_],
        bins: int = 10,
        probabilities: FloatArray | None = None,
        true_index: IntArray | None = None,
    ) -> ReliabilityStats:
        c = np.asarray(confidences, dtype=np.float64)
        ok = np.asarray(correct, dtype=np.bool_)
        idx = bin_index(c, bins)
        stats = cls(
            np.bincount(idx, minlength=bins).astype(np.int64),
            np.bincount(idx, c, minlength=bins).astype(np.float64),
            np.bincount(idx, ok.astype(np.int64), minlength=bins).astype(np.int64),
        )
        if probabilities is not None and true_index is not None:
            stats.brier_sum = float(brier_terms(probabilities, true_index).sum())
            stats.nll_sum = float(nll_terms(probabilities, true_index).sum())
            stats.nll_count = len(c)
        else:
            stats.brier_sum = float(((c - ok) ** 2).sum())
        return stats

    def __add__(self, other: ReliabilityStats) -> ReliabilityStats:
        return ReliabilityStats(
            self.count + other.count,
            self.conf_sum + other.conf_sum,
            self.correct_sum + other.correct_sum,
            self.brier_sum + other.brier_sum,
            self.nll_sum + other.nll_sum,
            self.nll_count + other.nll_count,
        )


def reliability_bins(stats: ReliabilityStats) -> list[ReliabilityBin]:
    m = stats.bins
    out = []
    for i, (n, cs, k) in enumerate(
        zip(stats.count.tolist(), stats.conf_sum.tolist(), stats.correct_sum.tolist(), strict=True)
    ):
        out.append(
            ReliabilityBin(i / m, (i + 1) / m, cs / n if n else None, k / n if n else None, n)
        )
    return out


def _gaps(stats: ReliabilityStats) -> tuple[FloatArray, IntArray]:
    n = stats.count
    nz = n > 0
    gaps = np.zeros(len(n))
    gaps[nz] = np.abs(stats.correct_sum[nz] / n[nz] - stats.conf_sum[nz] / n[nz])
    return gaps, n


def ece(stats: ReliabilityStats) -> float | None:
    """ECE = Σ_b (n_b/N)·|acc_b − conf_b|; None without labeled samples."""
    gaps, n = _gaps(stats)
    total = n.sum()
    return float((gaps * n).sum() / total) if total else None


def mce(stats: ReliabilityStats) -> float | None:
    """MCE = max over non-empty bins of |acc_b − conf_b|."""
    gaps, n = _gaps(stats)
    return float(gaps[n > 0].max()) if (n > 0).any() else None


def accuracy(stats: ReliabilityStats) -> float | None:
    return float(stats.correct_sum.sum() / stats.n) if stats.n else None


def brier(stats: ReliabilityStats) -> float | None:
    """Mean Brier score: Σ_c (p_c − y_c)² with probabilities, else (confidence − correct)²."""
    return stats.brier_sum / stats.n if stats.n else None


def nll(stats: ReliabilityStats) -> float | None:
    """Mean −log p(true class), over samples that carried probabilities."""
    return stats.nll_sum / stats.nll_count if stats.nll_count else None


def brier_terms(probabilities: FloatArray, true_index: IntArray) -> FloatArray:
    """Per sample Σ_c (p_c − y_c)² (probability form)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.zeros_like(p)
    y[np.arange(len(p)), true_index] = 1.0
    return np.asarray(((p - y) ** 2).sum(axis=1))


def nll_terms(probabilities: FloatArray, true_index: IntArray) -> FloatArray:
    p = np.asarray(probabilities, dtype=np.float64)
    return np.asarray(-np.log(np.clip(p[np.arange(len(p)), true_index], NLL_FLOOR, 1.0)))


def classwise_ece(probabilities: FloatArray, true_index: IntArray, bins: int = 10) -> float | None:
    """Mean over classes of the one-vs-rest ECE of p_c against 1[y = c]."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        return None
    _check_unit("probabilities", p)
    values = []
    for c in range(p.shape[1]):
        hit = np.asarray(true_index) == c
        values.append(ece(ReliabilityStats.from_arrays(p[:, c], hit, bins)))
    return float(np.mean([v for v in values if v is not None]))
