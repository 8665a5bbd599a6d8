"""Reference profiles of one model version, and the binning of current values against them.

A streaming drift worker keeps, per model version, feature and window, only the counts that
``bin_counts`` returns, so its memory is bounded by the profile's cell count whatever the
traffic. The layout of that count vector is fixed by the profile (store it under a key that
names the profile's ``version``, since a new profile may have other cells):

- numeric feature: the quantile bins, then the fine cells (``NumericProfile.split``);
- categorical feature: the reference categories in profile order, then ``__other__``.

Numeric cells are right-closed, (lo, hi], found with ``np.searchsorted(edges, x,
side="left")``: the quantile bins are (−inf, e₀], (e₀, e₁], …, (e_last, +inf), so every
value lands somewhere; the fine cells are an underflow (−inf, lo], ``fine_bins`` equal-width
cells between the reference's robust minimum and maximum, and an overflow (hi, +inf).

Missing values are not counted: NaN for numbers and the empty string for categories (how
``shared.contracts.validation`` fills an event that lacks the feature). A feature's sample count is
the number of values present.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
OTHER = "__other__"
"""The bucket of every category the profile does not name: beyond the cap in the
reference, or never seen there. A real category of that name is merged into it."""
MISSING_CATEGORY = ""


@dataclass(frozen=True, slots=True)
class NumericProfile:
    """Reference distribution of one numeric feature (or of the confidence)."""

    name: str
    n_samples: int
    edges: tuple[float, ...]
    """Interior edges of the quantile bins, strictly increasing; len(edges) + 1 bins."""
    proportions: tuple[float, ...]
    """Reference share of each quantile bin."""
    fine_lo: float
    fine_hi: float
    fine_bins: int
    fine_proportions: tuple[float, ...]
    """Reference share of each fine cell: underflow, ``fine_bins`` cells, overflow."""
    mean: float
    std: float
    _edges: FloatArray = field(init=False, repr=False, compare=False)
    _fine_edges: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.size and not np.all(np.diff(edges) > 0):
            raise ValueError(f"feature {self.name!r}: edges {self.edges} must strictly increase")
        if len(self.proportions) != edges.size + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(self.proportions)} proportions for "
                f"{edges.size} edges; expected {edges.size + 1}"
            )
        if not (self.fine_bins >= 1 and self.fine_hi > self.fine_lo):
            raise ValueError(
                f"feature {self.name!r}: fine range ({self.fine_lo}, {self.fine_hi}] with "
                f"{self.fine_bins} bins; expected fine_hi > fine_lo and at least 1 bin"
            )
        if len(self.fine_proportions) != self.fine_bins + 2:
            raise ValueError(
                f"feature {self.name!r}: {len(self.fine_proportions)} fine proportions; "
                f"expected fine_bins + 2 = {self.fine_bins + 2}"
            )
        object.__setattr__(self, "_edges", edges)
        fine = np.linspace(self.fine_lo, self.fine_hi, self.fine_bins + 1)
        object.__setattr__(self, "_fine_edges", fine)

    @property
    def n_bins(self) -> int:
        return len(self.proportions)

    @property
    def n_cells(self) -> int:
        """Length of the count vector ``bin_counts`` returns for this feature."""
        return self.n_bins + self.fine_bins + 2

    @property
    def fine_edges(self) -> FloatArray:
        """The ``fine_bins + 1`` edges between the underflow and the overflow cell."""
        return self._fine_edges

    def split(self, counts: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        """(quantile-bin counts, fine-cell counts) of a count vector of this feature."""
        c = np.asarray(counts, dtype=np.int64)
        if c.shape != (self.n_cells,):
            raise ValueError(
                f"feature {self.name!r}: counts have shape {c.shape}; expected ({self.n_cells},)"
            )
        return c[: self.n_bins], c[self.n_bins :]

    def count(self, values: npt.ArrayLike) -> IntArray:
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        coarse = np.bincount(np.searchsorted(self._edges, x, side="left"), minlength=self.n_bins)
        fine = np.bincount(
            np.searchsorted(self._fine_edges, x, side="left"), minlength=self.fine_bins + 2
        )
        return np.concatenate([coarse, fine]).astype(np.int64)


@dataclass(frozen=True, slots=True)
class CategoricalProfile:
    """Reference shares of one categorical feature (or of the predicted label)."""

    name: str
    n_samples: int
    categories: tuple[str, ...]
    """The most frequent reference categories (at most the builder's cap), by share."""
    shares: tuple[float, ...]
    """Share of each category, then of ``__other__`` (0 when nothing was cut)."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.categories) + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(self.shares)} shares for {len(self.categories)} "
                f"categories; expected one per category plus {OTHER!r}"
            )
        if len(set(self.categories)) != len(self.categories) or OTHER in self.categories:
            raise ValueError(
                f"feature {self.name!r}: categories {self.categories} must be distinct and "
                f"must not include {OTHER!r}"
            )
        # A dict, not a sorted numpy string array: a fixed-width unicode array is as wide as
        # its longest value times the count, so one long category would cost gigabytes.
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.categories)})

    @property
    def n_cells(self) -> int:
        return len(self.shares)

    def count(self, values: npt.ArrayLike) -> IntArray:
        tally = _tally(values)
        other = len(self.categories)
        out = np.zeros(self.n_cells, dtype=np.int64)
        index = self._index
        for label, n in tally.items():
            if label != MISSING_CATEGORY:
                out[index.get(label, other)] += n
        return out


def _tally(values: npt.ArrayLike) -> Counter[str]:
    """Distinct values and their counts, as Python strings (memory follows the values
    themselves, never the longest one times their number)."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return Counter(str(v) for v in values)  # type: ignore[union-attr]


FeatureProfile = NumericProfile | CategoricalProfile


def bin_counts(feature: FeatureProfile, values: npt.ArrayLike) -> IntArray:
    """Counts of ``values`` over the feature's cells (layout in the module docstring); add
    them per micro-batch to get a window's counts. Vectorised: searchsorted + bincount for
    numbers, unique + searchsorted for categories."""
    return feature.count(values)


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """What "normal" looks like for one model version; drift is measured against it."""

    model_version: str
    version: str
    """Identifies this profile; windowed counts are only comparable within one version."""
    n_samples: int
    confidence: NumericProfile
    predicted_labels: CategoricalProfile
    features: dict[str, FeatureProfile] = field(default_factory=dict)


CONFIDENCE_KEY = "__confidence__"
LABEL_KEY = "__predicted_label__"
"""Keys of the confidence and predicted-label counts beside the features' names; the
dunder form cannot clash with a feature of an ordinary name."""


def bin_batch(
    profile: ReferenceProfile,
    confidences: npt.ArrayLike,
    predicted_labels: npt.ArrayLike,
    features: Mapping[str, npt.ArrayLike] | None = None,
) -> dict[str, IntArray]:
    """Counts of one micro-batch against every part of the profile: the confidence under
    ``CONFIDENCE_KEY``, the predicted labels under ``LABEL_KEY`` and each profiled feature
    under its name. Features the profile does not know are skipped (there is no reference
    to compare them with)."""
    out = {
        CONFIDENCE_KEY: profile.confidence.count(confidences),
        LABEL_KEY: profile.predicted_labels.count(predicted_labels),
    }
    for name, values in (features or {}).items():
        feature = profile.features.get(name)
        if feature is not None:
            out[name] = feature.count(values)
    return out
