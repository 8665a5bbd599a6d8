"""Build a ``ReferenceProfile`` for one model version from raw reference arrays.

Quantile bins. The interior edges are the reference's k/bins quantiles (k = 1 … bins−1)
with numpy's ``inverted_cdf`` method, so every edge is a reference value and, with the
right-closed bins (e_{i−1}, e_i], a continuous feature gets exactly equal bins. Repeated
quantiles are de-duplicated, and any edge value that alone holds at least 1/bins of the
reference (a point mass: the value of a constant feature, the levels of a low-cardinality
one, a clip limit) gets a bin of its own, (nextafter(v, −inf), v], so values just below it
are told apart from it. A constant feature c thus has the bins (−inf, c⁻], (c⁻, c],
(c, +inf) with proportions 0, 1, 0, and any other value moves mass out of the middle bin.
The count of bins is at most 2·bins − 1 and usually exactly ``bins``.

Fine histogram. ``fine_bins`` equal-width cells between the 0.1 % and 99.9 % reference
quantiles (the robust minimum and maximum; the confidence uses [0, 1] instead), plus an
underflow and an overflow cell. When those two quantiles coincide (a constant or nearly
constant feature) the range is widened to c ± 1e-6·max(1, |c|).

The profile ``version`` defaults to a digest of its content, so the same reference data
always yields the same version and a changed one never reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.drift.profile import (
    CONFIDENCE_KEY,
    LABEL_KEY,
    MISSING_CATEGORY,
    OTHER,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)
from shared.drift.profile_codec import profile_to_dict

FloatArray = npt.NDArray[np.float64]
DEFAULT_BINS = 10
DEFAULT_FINE_BINS = 200
DEFAULT_MAX_CATEGORIES = 50
ROBUST_QUANTILES = (0.001, 0.999)
CONSTANT_HALF_WIDTH = 1e-6
CONFIDENCE_RANGE = (0.0, 1.0)


def quantile_edges(values: FloatArray, bins: int = DEFAULT_BINS) -> FloatArray:
    """Interior edges of the quantile bins of finite ``values`` (module docstring)."""
    if bins < 2:
        raise ValueError(f"bins is {bins}; expected at least 2")
    x = np.sort(np.asarray(values, dtype=np.float64))
    q = np.unique(np.quantile(x, np.arange(1, bins) / bins, method="inverted_cdf"))
    mass = np.searchsorted(x, q, side="right") - np.searchsorted(x, q, side="left")
    point_masses = q[mass * bins >= x.size]
    return np.unique(np.concatenate([q, np.nextafter(point_masses, -np.inf)]))


def robust_range(values: FloatArray) -> tuple[float, float]:
    lo, hi = (float(v) for v in np.quantile(values, ROBUST_QUANTILES))
    if hi > lo:
        return lo, hi
    half = CONSTANT_HALF_WIDTH * max(1.0, abs(lo))
    return lo - half, lo + half


def numeric_profile(
    name: str,
    values: npt.ArrayLike,
    *,
    bins: int = DEFAULT_BINS,
    fine_bins: int = DEFAULT_FINE_BINS,
    fine_range: tuple[float, float] | None = None,
) -> NumericProfile:
    """Profile of one numeric feature; NaN means missing and is left out."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if not x.size:
        raise ValueError(f"feature {name!r} has no reference values (all missing)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"feature {name!r} has infinite reference values; expected finite")
    edges = quantile_edges(x, bins)
    lo, hi = fine_range or robust_range(x)
    empty = NumericProfile(
        name=name,
        n_samples=int(x.size),
        edges=tuple(edges.tolist()),
        proportions=(0.0,) * (edges.size + 1),
        fine_lo=lo,
        fine_hi=hi,
        fine_bins=fine_bins,
        fine_proportions=(0.0,) * (fine_bins + 2),
        mean=float(x.mean()),
        std=float(x.std()),
    )
    coarse, fine = empty.split(empty.count(x))
    return dataclasses.replace(
        empty,
        proportions=tuple((coarse / x.size).tolist()),
        fine_proportions=tuple((fine / x.size).tolist()),
    )


def categorical_profile(
    name: str,
    values: npt.ArrayLike,
    *,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> CategoricalProfile:
    """Shares of the ``max_categories`` most frequent categories (ties by name) and of
    ``__other__`` for the rest; the empty string means missing and is left out."""
    # Counted as Python strings, never as a fixed-width numpy unicode array (whose size is
    # the longest value times the number of values).
    seq = values.tolist() if isinstance(values, np.ndarray) else list(values)  # type: ignore[arg-type]
    tally = Counter(str(v) for v in seq)
    tally.pop(MISSING_CATEGORY, None)
    n = sum(tally.values())
    if not n:
        raise ValueError(f"feature {name!r} has no reference values (all missing)")
    named = sorted(((-c, label) for label, c in tally.items() if label != OTHER))
    keep = named[:max_categories]
    kept = sum(-c for c, _ in keep)
    shares = [*(-c / n for c, _ in keep), float(n - kept) / n]
    return CategoricalProfile(
        name=name,
        n_samples=n,
        categories=tuple(label for _, label in keep),
        shares=tuple(shares),
    )


def feature_profile(
    name: str,
    values: npt.ArrayLike,
    *,
    bins: int = DEFAULT_BINS,
    fine_bins: int = DEFAULT_FINE_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> FeatureProfile:
    """Numeric profile for an array of numbers (bool, int, float), categorical otherwise."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return numeric_profile(name, values, bins=bins, fine_bins=fine_bins)
    seq: list[Any] = values.tolist() if isinstance(values, np.ndarray) else list(values)  # type: ignore[arg-type]
    if all(isinstance(v, int | float) and not isinstance(v, str) for v in seq):
        return numeric_profile(
            name, np.asarray(seq, dtype=np.float64), bins=bins, fine_bins=fine_bins
        )
    return categorical_profile(name, seq, max_categories=max_categories)


def build_profile(
    model_version: str,
    confidences: npt.ArrayLike,
    predicted_labels: npt.ArrayLike,
    features: Mapping[str, npt.ArrayLike] | None = None,
    *,
    version: str | None = None,
    bins: int = DEFAULT_BINS,
    fine_bins: int = DEFAULT_FINE_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> ReferenceProfile:
    """The reference profile of one model version from N reference events: their
    confidences, predicted labels and features (name → N values, aligned with them)."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    n = conf.size
    if not n:
        raise ValueError("confidences is empty; a reference needs at least one event")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be finite numbers in [0, 1]")
    columns: dict[str, npt.ArrayLike] = {"predicted_labels": predicted_labels, **(features or {})}
    for key, col in columns.items():
        if np.size(col) != n:
            raise ValueError(f"{key} has {np.size(col)} values; expected {n}, one per confidence")
    profile = ReferenceProfile(
        model_version=model_version,
        version=version or "",
        n_samples=n,
        confidence=numeric_profile(
            CONFIDENCE_KEY, conf, bins=bins, fine_bins=fine_bins, fine_range=CONFIDENCE_RANGE
        ),
        predicted_labels=categorical_profile(
            LABEL_KEY, predicted_labels, max_categories=max_categories
        ),
        features={
            name: feature_profile(
                name, col, bins=bins, fine_bins=fine_bins, max_categories=max_categories
            )
            for name, col in (features or {}).items()
        },
    )
    if version:
        return profile
    return dataclasses.replace(profile, version=content_version(profile))


def content_version(profile: ReferenceProfile) -> str:
    """First 16 hex digits of the SHA-256 of the profile's canonical JSON, version excluded."""
    body = profile_to_dict(dataclasses.replace(profile, version=""))
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
