"""Calibration metrics (docs/architecture.md, "Metric definitions") from raw arrays of labeled
predictions: reliability bins, ECE, MCE, Brier (both forms), NLL and classwise ECE.

Each metric also has a streaming form over sufficient statistics, in ``shared.metrics.reliability``
(``ece(stats)``, ``mce(stats)``, …) and ``shared.metrics.classwise``; the unit tests prove both
forms agree. The array forms here work from per-sample residuals, so they are an
independent computation, not a wrapper around the stats. Everything is re-exported from
this module, the one place to import calibration metrics from.

Only labeled predictions count; ``correct`` means ground truth equals the predicted label.
Binning is top-label, M equal-width bins with the edge rule of ``shared.metrics.confidence_bins``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.metrics.classwise import ClasswiseStats, classwise_ece, classwise_ece_from_stats
from shared.metrics.confidence_bins import (
    FloatArray,
    IntArray,
    bin_index,
    check_bins,
    outcomes,
    unit_interval,
)
from shared.metrics.reliability import (
    NLL_FLOOR,
    ReliabilityBin,
    ReliabilityStats,
    accuracy,
    brier,
    brier_terms,
    ece,
    mce,
    nll,
    nll_terms,
    reliability_bins,
)

__all__ = [
    "NLL_FLOOR",
    "ClasswiseStats",
    "ReliabilityBin",
    "ReliabilityStats",
    "accuracy",
    "bin_index",
    "brier",
    "brier_from_confidences",
    "brier_from_probabilities",
    "brier_terms",
    "classwise_ece",
    "classwise_ece_from_stats",
    "ece",
    "ece_from_arrays",
    "mce",
    "mce_from_arrays",
    "nll",
    "nll_from_arrays",
    "nll_terms",
    "reliability_bins",
    "reliability_bins_from_arrays",
]


def reliability_bins_from_arrays(
    confidences: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 10
) -> list[ReliabilityBin]:
    """The reliability bins of labeled samples (see ``reliability_bins``)."""
    return reliability_bins(ReliabilityStats.from_arrays(confidences, correct, bins))


def _residuals(
    confidences: npt.ArrayLike, correct: npt.ArrayLike, bins: int
) -> tuple[FloatArray, IntArray]:
    """Σ_{i∈b} (correct_i − c_i) per bin b, and the bin counts."""
    c = unit_interval("confidences", confidences)
    ok = outcomes("correct", correct, c.size)
    m = check_bins(bins)
    idx = bin_index(c, m)
    residual = np.bincount(idx, ok - c, minlength=m).astype(np.float64)
    return residual, np.bincount(idx, minlength=m).astype(np.int64)


def ece_from_arrays(
    confidences: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 10
) -> float | None:
    """ECE = Σ_b (n_b/N)·|acc_b − conf_b| = (1/N)·Σ_b |Σ_{i∈b} (correct_i − c_i)|."""
    residual, n = _residuals(confidences, correct, bins)
    total = int(n.sum())
    return float(np.abs(residual).sum() / total) if total else None


def mce_from_arrays(
    confidences: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 10
) -> float | None:
    """MCE = max over non-empty bins b of |Σ_{i∈b} (correct_i − c_i)| / n_b."""
    residual, n = _residuals(confidences, correct, bins)
    nz = n > 0
    return float((np.abs(residual[nz]) / n[nz]).max()) if nz.any() else None


def brier_from_probabilities(
    probabilities: npt.ArrayLike, true_index: npt.ArrayLike
) -> float | None:
    """Brier, probability form: mean over samples of Σ_c (p_c − y_c)²."""
    terms = brier_terms(probabilities, true_index)
    return float(terms.mean()) if terms.size else None


def brier_from_confidences(confidences: npt.ArrayLike, correct: npt.ArrayLike) -> float | None:
    """Brier, top-label form: mean over samples of (confidence − correct)²."""
    c = unit_interval("confidences", confidences)
    ok = outcomes("correct", correct, c.size)
    return float(np.square(c - ok).mean()) if c.size else None


def nll_from_arrays(probabilities: npt.ArrayLike, true_index: npt.ArrayLike) -> float | None:
    """NLL: mean over samples of −ln max(p(true class), NLL_FLOOR)."""
    terms = nll_terms(probabilities, true_index)
    return float(terms.mean()) if terms.size else None
