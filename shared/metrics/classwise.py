"""Classwise ECE (docs/architecture.md, "Metric definitions"): the mean over classes of the
one-vs-rest ECE, from raw arrays or from per-class sufficient statistics.

For class c every labeled sample with a probability vector counts once: its p_c is binned
with the reliability rule of ``shared.metrics.confidence_bins`` and compared with 1[y = c], so
ECE_c = Σ_b (n_b/N_c)·|freq_b − mean p_b| = (1/N_c)·Σ_b |Σ_{i∈b} (1[y_i = c] − p_ic)|.
Classes are named by label strings, so stats of batches with different class lists merge.
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
    unit_interval,
)


def _binned(
    probabilities: npt.ArrayLike, true_index: npt.ArrayLike, bins: int
) -> tuple[IntArray, FloatArray, FloatArray, int]:
    """Flat cell (class·M + bin) of every (sample, class), its p, its hit, and C."""
    p = unit_interval("probabilities", probabilities, ndim=2)
    t = class_indices("true_index", true_index, p.shape[0], p.shape[1])
    m = check_bins(bins)
    classes = p.shape[1]
    cell = bin_index(p, m, name="probabilities") + m * np.arange(classes)
    hit = (t[:, None] == np.arange(classes)).astype(np.float64)
    return cell.ravel(), p.ravel(), hit.ravel(), classes


def classwise_ece(
    probabilities: npt.ArrayLike, true_index: npt.ArrayLike, bins: int = 10
) -> float | None:
    """Mean over the C columns of the one-vs-rest ECE of p_c against 1[y = c]; None when
    there are no samples. ``true_index`` is the column of each sample's true class."""
    cell, p, hit, classes = _binned(probabilities, true_index, bins)
    if not p.size:
        return None
    m = check_bins(bins)
    residual = np.bincount(cell, hit - p, minlength=classes * m).reshape(classes, m)
    samples = p.size // classes
    return float((np.abs(residual).sum(axis=1) / samples).mean())


@dataclass(frozen=True, slots=True)
class ClasswiseStats:
    """Per class (row, named by ``labels``) and bin (column): ``count`` of samples,
    ``p_sum`` of their p_c, ``hit_sum`` of those whose truth is c. Mergeable by ``+``."""

    labels: tuple[str, ...]
    count: IntArray
    p_sum: FloatArray
    hit_sum: IntArray

    def __post_init__(self) -> None:
        labels = tuple(str(label) for label in self.labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct; got {list(labels)}")
        count = np.asarray(self.count, dtype=np.int64)
        p_sum = np.asarray(self.p_sum, dtype=np.float64)
        hit_sum = np.asarray(self.hit_sum, dtype=np.int64)
        if count.ndim != 2 or count.shape[0] != len(labels) or count.shape[1] < 1:
            raise ValueError(
                f"count must have shape ({len(labels)}, bins) for {len(labels)} labels; "
                f"got {count.shape}"
            )
        for name, arr in (("p_sum", p_sum), ("hit_sum", hit_sum)):
            if arr.shape != count.shape:
                raise ValueError(f"{name} has shape {arr.shape}; expected {count.shape}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "p_sum", p_sum)
        object.__setattr__(self, "hit_sum", hit_sum)

    @property
    def bins(self) -> int:
        return int(self.count.shape[1])

    @classmethod
    def empty(cls, bins: int = 10) -> ClasswiseStats:
        m = check_bins(bins)
        return cls((), np.zeros((0, m), np.int64), np.zeros((0, m)), np.zeros((0, m), np.int64))

    @classmethod
    def from_arrays(
        cls,
        probabilities: npt.ArrayLike,
        true_index: npt.ArrayLike,
        labels: Sequence[str],
        bins: int = 10,
    ) -> ClasswiseStats:
        """Stats of samples with probability vectors; ``labels`` names the C columns."""
        cell, p, hit, classes = _binned(probabilities, true_index, bins)
        if len(labels) != classes:
            raise ValueError(f"labels has {len(labels)} names; probabilities has {classes}")
        m = check_bins(bins)
        shape = (classes, m)
        return cls(
            tuple(labels),
            np.bincount(cell, minlength=classes * m).reshape(shape).astype(np.int64),
            np.bincount(cell, p, minlength=classes * m).reshape(shape).astype(np.float64),
            np.bincount(cell, hit, minlength=classes * m).reshape(shape).astype(np.int64),
        )

    def __add__(self, other: ClasswiseStats) -> ClasswiseStats:
        return ClasswiseStats.merge([self, other], self.bins)

    @classmethod
    def merge(cls, parts: Iterable[ClasswiseStats], bins: int = 10) -> ClasswiseStats:
        """The sum of ``parts``, class by label; a label missing from a part adds nothing."""
        items = list(parts)
        if not items:
            return cls.empty(bins)
        sizes = {s.bins for s in items}
        if len(sizes) != 1:
            raise ValueError(f"parts must share one number of bins; got {sorted(sizes)}")
        row: dict[str, int] = {}
        for s in items:  # one step per part and class, never per sample
            for label in s.labels:
                row.setdefault(label, len(row))
        shape = (len(row), sizes.pop())
        count, p_sum, hit_sum = (
            np.zeros(shape, np.int64),
            np.zeros(shape),
            np.zeros(shape, np.int64),
        )
        for s in items:
            rows = np.array([row[label] for label in s.labels], dtype=np.int64)
            count[rows] += s.count  # a part's labels are distinct, so no index repeats
            p_sum[rows] += s.p_sum
            hit_sum[rows] += s.hit_sum
        return cls(tuple(row), count, p_sum, hit_sum)

    def to_lists(self) -> tuple[list[str], list[int], list[float]]:
        """Flat form: labels, ints = count then hit_sum (row-major), floats = p_sum."""
        ints = [*self.count.ravel().tolist(), *self.hit_sum.ravel().tolist()]
        return list(self.labels), ints, self.p_sum.ravel().tolist()

    @classmethod
    def from_lists(
        cls, labels: Sequence[str], ints: Sequence[int], floats: Sequence[float], bins: int = 10
    ) -> ClasswiseStats:
        """Inverse of ``to_lists``; the number of bins follows from the lengths (``bins`` is
        used only when there are no labels)."""
        classes = len(labels)
        if not classes and not ints and not floats:
            return cls.empty(bins)
        if not classes or not floats or len(floats) % classes:
            raise ValueError(
                f"floats must hold C·M values for C = {classes} labels; got {len(floats)}"
            )
        m = len(floats) // classes
        if len(ints) != 2 * classes * m:
            raise ValueError(f"ints must hold 2·C·M = {2 * classes * m} values; got {len(ints)}")
        i = np.asarray(ints, dtype=np.int64).reshape(2, classes, m)
        f = np.asarray(floats, dtype=np.float64).reshape(classes, m)
        if (i < 0).any() or (i[1] > i[0]).any():
            raise ValueError(f"ints must be counts with hit_sum ≤ count; got {list(ints)}")
        if not np.isfinite(f).all():
            raise ValueError(f"floats must be finite; got {list(floats)}")
        return cls(tuple(labels), i[0], f, i[1])


def classwise_ece_from_stats(stats: ClasswiseStats) -> float | None:
    """Mean over classes with samples of Σ_b (n_b/N_c)·|freq_b − mean p_b|; None if none."""
    n = stats.count
    per_class = n.sum(axis=1)
    seen = per_class > 0
    if not seen.any():
        return None
    nz = n > 0
    freq = np.divide(stats.hit_sum, n, out=np.zeros(n.shape), where=nz)
    mean_p = np.divide(stats.p_sum, n, out=np.zeros(n.shape), where=nz)
    weights = n[seen] / per_class[seen, None]
    return float((weights * np.abs(freq - mean_p)[seen]).sum(axis=1).mean())
