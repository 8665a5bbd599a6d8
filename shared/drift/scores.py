"""Drift scores of a window's counts against a reference profile, one ``DriftScore`` each.

- numeric feature: PSI over the quantile bins, Jensen–Shannon distance and the KS statistic
  over the fine cells;
- categorical feature and predicted-label mix: chi-squared, scored by Cohen's w = √(χ²/n)
  (larger = more drift, independent of the window size) with the p-value alongside;
- confidence: PSI and KS as for a feature, plus |mean shift| of the confidence.

A score computed on fewer than ``min_samples`` current values is kept but marked not
trusted, and an untrusted score has no severity. The default of 500 keeps sampling noise
well below the usual PSI warning of 0.1: PSI of two samples of one distribution is about
(bins − 1)·(1/n + 1/N), 0.018 for n = 500 current values and 10 bins with a large reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from shared.drift.profile import (
    CONFIDENCE_KEY,
    LABEL_KEY,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)
from shared.drift.stats import (
    Severity,
    chi_squared,
    js_distance,
    ks_from_histograms,
    psi,
    severity,
)

DEFAULT_MIN_SAMPLES = 500


class DriftMethod(StrEnum):
    PSI = "psi"
    JS_DISTANCE = "js_distance"
    KS = "ks"
    CHI_SQUARED = "chi_squared"
    """Score = Cohen's w = √(χ²/n); ``p_value`` carries the test's p-value."""
    MEAN_SHIFT = "mean_shift"
    """Score = |current mean − reference mean| (of the confidence)."""


@dataclass(frozen=True, slots=True)
class DriftScore:
    feature: str
    method: DriftMethod
    score: float
    n_samples: int
    """Current values the score rests on."""
    trusted: bool
    """n_samples ≥ min_samples (and > 0)."""
    reference_version: str
    p_value: float | None = None

    def severity(self, threshold: float) -> Severity | None:
        """``drift_stats.severity`` of the score; None when the score is not trusted."""
        return severity(self.score, threshold) if self.trusted else None


def _scores(
    feature: str,
    n: int,
    reference_version: str,
    min_samples: int,
    values: Mapping[DriftMethod, float],
    p_value: float | None = None,
) -> list[DriftScore]:
    trusted = n >= max(min_samples, 1)
    return [
        DriftScore(feature, method, score, n, trusted, reference_version, p_value)
        for method, score in values.items()
    ]


def numeric_drift(
    feature: NumericProfile,
    counts: npt.ArrayLike,
    *,
    reference_version: str,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[DriftScore]:
    """PSI, JS distance and KS of one numeric feature's window counts (all 0 when empty)."""
    coarse, fine = feature.split(counts)
    n = int(coarse.sum())
    values = {DriftMethod.PSI: 0.0, DriftMethod.JS_DISTANCE: 0.0, DriftMethod.KS: 0.0}
    if n:
        values = {
            DriftMethod.PSI: psi(feature.proportions, coarse),
            DriftMethod.JS_DISTANCE: js_distance(feature.fine_proportions, fine),
            DriftMethod.KS: ks_from_histograms(feature.fine_proportions, fine),
        }
    return _scores(feature.name, n, reference_version, min_samples, values)


def categorical_drift(
    feature: CategoricalProfile,
    counts: npt.ArrayLike,
    *,
    reference_version: str,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftScore:
    """Chi-squared of one categorical feature's window counts (w = 0, p = 1 when empty)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.shape != (feature.n_cells,):
        raise ValueError(
            f"feature {feature.name!r}: counts have shape {c.shape}; expected ({feature.n_cells},)"
        )
    n = int(c.sum())
    w, p = 0.0, 1.0
    if n:
        test = chi_squared(feature.shares, c)
        w, p = test.effect_size, test.p_value
    values = {DriftMethod.CHI_SQUARED: w}
    return _scores(feature.name, n, reference_version, min_samples, values, p)[0]


def feature_drift(
    feature: FeatureProfile,
    counts: npt.ArrayLike,
    *,
    reference_version: str,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[DriftScore]:
    if isinstance(feature, NumericProfile):
        return numeric_drift(
            feature, counts, reference_version=reference_version, min_samples=min_samples
        )
    return [
        categorical_drift(
            feature, counts, reference_version=reference_version, min_samples=min_samples
        )
    ]


def histogram_mean(feature: NumericProfile, fine_counts: npt.ArrayLike) -> float:
    """Mean estimated from fine-cell counts: cell midpoints, the underflow counted at the
    range's low end and the overflow at its high end. For values inside the range the error
    is at most half a cell (0.0025 for the confidence's 200 cells on [0, 1])."""
    c = np.asarray(fine_counts, dtype=np.float64)
    e = feature.fine_edges
    points = np.concatenate([[e[0]], (e[:-1] + e[1:]) / 2.0, [e[-1]]])
    n = c.sum()
    return float((c * points).sum() / n) if n else float("nan")


def mean_shift(
    feature: NumericProfile, counts: npt.ArrayLike, current_mean: float | None = None
) -> float:
    """Signed shift current mean − reference mean; the current mean is ``current_mean`` when
    the caller keeps an exact sum, else estimated from the fine cells (0 when empty)."""
    _, fine = feature.split(counts)
    if not fine.sum():
        return 0.0
    cur = histogram_mean(feature, fine) if current_mean is None else current_mean
    return cur - feature.mean


def confidence_drift(
    feature: NumericProfile,
    counts: npt.ArrayLike,
    *,
    reference_version: str,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    current_mean: float | None = None,
) -> list[DriftScore]:
    """PSI, KS and |mean shift| of the window's confidence distribution."""
    base = numeric_drift(
        feature, counts, reference_version=reference_version, min_samples=min_samples
    )
    shift = DriftScore(
        feature.name,
        DriftMethod.MEAN_SHIFT,
        abs(mean_shift(feature, counts, current_mean)),
        base[0].n_samples,
        base[0].trusted,
        reference_version,
    )
    return [s for s in base if s.method is not DriftMethod.JS_DISTANCE] + [shift]


def profile_drift(
    profile: ReferenceProfile,
    counts: Mapping[str, npt.ArrayLike],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    current_mean_confidence: float | None = None,
) -> list[DriftScore]:
    """Every score of a window whose counts are keyed as ``drift_profile.bin_batch`` keys
    them; a part of the profile with no counts in the window is skipped."""
    version = profile.version
    out: list[DriftScore] = []
    if CONFIDENCE_KEY in counts:
        out += confidence_drift(
            profile.confidence,
            counts[CONFIDENCE_KEY],
            reference_version=version,
            min_samples=min_samples,
            current_mean=current_mean_confidence,
        )
    if LABEL_KEY in counts:
        out.append(
            categorical_drift(
                profile.predicted_labels,
                counts[LABEL_KEY],
                reference_version=version,
                min_samples=min_samples,
            )
        )
    for name, feature in profile.features.items():
        if name in counts:
            out += feature_drift(
                feature, counts[name], reference_version=version, min_samples=min_samples
            )
    return out
