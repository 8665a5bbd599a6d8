"""Sufficient statistics of calibration (docs/architecture.md, "Metric definitions") and the metrics
they answer: reliability bins, ECE, MCE, accuracy, Brier and NLL.

A streaming aggregator keeps one ``ReliabilityStats`` per time bucket (per-bin counts and
sums); stats add up, so a window of any length is answered from its buckets alone and
memory does not grow with traffic. ``shared.metrics.calibration`` computes the same metrics from
raw arrays, and the unit tests prove both forms agree.

Only labeled predictions count; ``correct`` means ground truth equals the predicted label.
Binning is top-label, M equal-width bins with the edge rule of ``shared.metrics.confidence_bins``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.metrics.confidence_bins import (
    FloatArray,
    IntArray,
    bin_index,
    check_bins,
    class_indices,
    outcomes,
    unit_interval,
)

NLL_FLOOR = 1e-12
"""p(true class) is clipped up to this before the log, so one sample that gave the truth
probability 0 costs −ln 1e-12 ≈ 27.6 instead of making the mean infinite."""


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of the reliability diagram, [lo, hi) (the last bin includes 1.0)."""

    lo: float
    hi: float
    confidence: float | None
    """Mean confidence of the bin's samples; None when the bin is empty."""
    accuracy: float | None
    """Share of the bin's samples that were correct; None when the bin is empty."""
    count: int


@dataclass(frozen=True, slots=True)
class ReliabilityStats:
    """Sufficient statistics of calibration over M bins, mergeable by ``+``.

    Per bin: ``count`` samples, ``conf_sum`` of their confidences, ``correct_sum`` of the
    correct ones. ``brier_sum`` adds each sample's Brier term (probability form for samples
    that carried probabilities, top-label form for the rest); ``nll_sum``/``nll_count`` add
    −ln p(true class) over the samples that carried probabilities.
    """

    count: IntArray
    conf_sum: FloatArray
    correct_sum: IntArray
    brier_sum: float = 0.0
    nll_sum: float = 0.0
    nll_count: int = 0

    def __post_init__(self) -> None:
        count = np.asarray(self.count, dtype=np.int64)
        conf_sum = np.asarray(self.conf_sum, dtype=np.float64)
        correct_sum = np.asarray(self.correct_sum, dtype=np.int64)
        if count.ndim != 1 or not count.size:
            raise ValueError(f"count must be a non-empty 1-d array; got shape {count.shape}")
        for name, arr in (("conf_sum", conf_sum), ("correct_sum", correct_sum)):
            if arr.shape != count.shape:
                raise ValueError(f"{name} has shape {arr.shape}; expected {count.shape}")
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "conf_sum", conf_sum)
        object.__setattr__(self, "correct_sum", correct_sum)

    @property
    def bins(self) -> int:
        return len(self.count)

    @property
    def n(self) -> int:
        """Labeled samples counted."""
        return int(self.count.sum())

    @property
    def n_correct(self) -> int:
        return int(self.correct_sum.sum())

    @classmethod
    def empty(cls, bins: int = 10) -> ReliabilityStats:
        m = check_bins(bins)
        return cls(np.zeros(m, np.int64), np.zeros(m), np.zeros(m, np.int64))

    @classmethod
    def from_arrays(
        cls,
        confidences: npt.ArrayLike,
        correct: npt.ArrayLike,
        bins: int = 10,
        probabilities: npt.ArrayLike | None = None,
        true_index: npt.ArrayLike | None = None,
    ) -> ReliabilityStats:
        """Stats of labeled samples; with ``probabilities`` (N×C) and ``true_index`` (column
        of the true class) Brier takes the probability form and NLL is counted."""
        c = unit_interval("confidences", confidences)
        ok = outcomes("correct", correct, c.size)
        m = check_bins(bins)
        idx = bin_index(c, m)
        if (probabilities is None) != (true_index is None):
            raise ValueError("probabilities and true_index must be given together")
        nll_sum, nll_count = 0.0, 0
        if probabilities is not None and true_index is not None:
            p, t = _probability_inputs(probabilities, true_index, rows=c.size)
            brier_sum = float(brier_terms(p, t).sum())
            nll_sum, nll_count = float(nll_terms(p, t).sum()), c.size
        else:
            brier_sum = float(np.square(c - ok).sum())
        return cls(
            np.bincount(idx, minlength=m).astype(np.int64),
            np.bincount(idx, c, minlength=m).astype(np.float64),
            np.bincount(idx, ok, minlength=m).astype(np.int64),
            brier_sum,
            nll_sum,
            nll_count,
        )

    def __add__(self, other: ReliabilityStats) -> ReliabilityStats:
        return ReliabilityStats.merge([self, other], self.bins)

    @classmethod
    def merge(cls, parts: Iterable[ReliabilityStats], bins: int = 10) -> ReliabilityStats:
        """The sum of ``parts`` (all with the same number of bins); empty stats if none."""
        items = list(parts)
        if not items:
            return cls.empty(bins)
        sizes = {s.bins for s in items}
        if len(sizes) != 1:
            raise ValueError(f"parts must share one number of bins; got {sorted(sizes)}")
        return cls(
            np.sum([s.count for s in items], axis=0),
            np.sum([s.conf_sum for s in items], axis=0),
            np.sum([s.correct_sum for s in items], axis=0),
            sum(s.brier_sum for s in items),
            sum(s.nll_sum for s in items),
            sum(s.nll_count for s in items),
        )

    def to_lists(self) -> tuple[list[int], list[float]]:
        """Flat form: ints = count + correct_sum + [nll_count], floats = conf_sum +
        [brier_sum, nll_sum]."""
        ints = [*self.count.tolist(), *self.correct_sum.tolist(), self.nll_count]
        floats = [*self.conf_sum.tolist(), self.brier_sum, self.nll_sum]
        return ints, floats

    @classmethod
    def from_lists(cls, ints: Sequence[int], floats: Sequence[float]) -> ReliabilityStats:
        """Inverse of ``to_lists``; the number of bins follows from the lengths."""
        if len(ints) < 3 or len(ints) % 2 == 0:
            raise ValueError(f"ints must hold 2·M + 1 values; got {len(ints)}")
        m = (len(ints) - 1) // 2
        if len(floats) != m + 2:
            raise ValueError(f"floats must hold M + 2 = {m + 2} values; got {len(floats)}")
        i = np.asarray(ints, dtype=np.int64)
        f = np.asarray(floats, dtype=np.float64)
        count, correct_sum = i[:m], i[m : 2 * m]
        if (i < 0).any() or (correct_sum > count).any():
            raise ValueError(f"ints must be counts with correct_sum ≤ count; got {list(ints)}")
        if not np.isfinite(f).all():
            raise ValueError(f"floats must be finite; got {list(floats)}")
        return cls(count, f[:m], correct_sum, float(f[m]), float(f[m + 1]), int(i[2 * m]))


def _probability_inputs(
    probabilities: npt.ArrayLike, true_index: npt.ArrayLike, rows: int | None = None
) -> tuple[FloatArray, IntArray]:
    p = unit_interval("probabilities", probabilities, ndim=2)
    if rows is not None and p.shape[0] != rows:
        raise ValueError(f"probabilities has {p.shape[0]} rows; expected one per sample, {rows}")
    t = class_indices("true_index", true_index, p.shape[0], p.shape[1])
    return p, t


def reliability_bins(stats: ReliabilityStats) -> list[ReliabilityBin]:
    """Per bin [i/M, (i+1)/M): mean confidence, accuracy (None when empty) and count."""
    m, n = stats.bins, stats.count
    nz = n > 0
    conf = np.divide(stats.conf_sum, n, out=np.zeros(m), where=nz)
    acc = np.divide(stats.correct_sum, n, out=np.zeros(m), where=nz)
    return [
        ReliabilityBin(i / m, (i + 1) / m, c if k else None, a if k else None, k)
        for i, (c, a, k) in enumerate(zip(conf.tolist(), acc.tolist(), n.tolist(), strict=True))
    ]


def _gaps(stats: ReliabilityStats) -> tuple[FloatArray, IntArray]:
    """|acc_b − conf_b| per bin (0 where empty), and the bin counts."""
    n = stats.count
    gaps = np.divide(
        np.abs(stats.correct_sum - stats.conf_sum), n, out=np.zeros(stats.bins), where=n > 0
    )
    return gaps, n


def ece(stats: ReliabilityStats) -> float | None:
    """ECE = Σ_b (n_b/N)·|acc_b − conf_b|; None without labeled samples."""
    gaps, n = _gaps(stats)
    total = int(n.sum())
    return float((n / total * gaps).sum()) if total else None


def mce(stats: ReliabilityStats) -> float | None:
    """MCE = max over non-empty bins of |acc_b − conf_b|; None without labeled samples."""
    gaps, n = _gaps(stats)
    return float(gaps[n > 0].max()) if (n > 0).any() else None


def accuracy(stats: ReliabilityStats) -> float | None:
    """Share of labeled samples that were correct."""
    return stats.n_correct / stats.n if stats.n else None


def brier(stats: ReliabilityStats) -> float | None:
    """Mean Brier term: Σ_c (p_c − y_c)² with probabilities, else (confidence − correct)²."""
    return stats.brier_sum / stats.n if stats.n else None


def nll(stats: ReliabilityStats) -> float | None:
    """Mean −ln max(p(true class), NLL_FLOOR) over samples that carried probabilities."""
    return stats.nll_sum / stats.nll_count if stats.nll_count else None


def brier_terms(probabilities: npt.ArrayLike, true_index: npt.ArrayLike) -> FloatArray:
    """Per sample Σ_c (p_c − y_c)², y the one-hot truth (probability form)."""
    p, t = _probability_inputs(probabilities, true_index)
    y = np.zeros_like(p)
    y[np.arange(len(p)), t] = 1.0
    terms: FloatArray = np.square(p - y).sum(axis=1)
    return terms


def nll_terms(probabilities: npt.ArrayLike, true_index: npt.ArrayLike) -> FloatArray:
    """Per sample −ln max(p(true class), NLL_FLOOR)."""
    p, t = _probability_inputs(probabilities, true_index)
    terms: FloatArray = -np.log(np.maximum(p[np.arange(len(p)), t], NLL_FLOOR))
    return terms
