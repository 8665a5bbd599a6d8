"""The binning rule and the input checks shared by the calibration and selective metrics.

Binning (docs/architecture.md, "Metric definitions"): M equal-width bins over [0, 1], bin i =
[i/M, (i+1)/M), confidence 1.0 in the last bin. The index is ``floor(c·M + EDGE_TOLERANCE)``
capped at M − 1, because a confidence written on a decimal edge is not exactly that edge in
binary floating point: 0.29·100 = 28.999999999999996 and 0.001·1000·k can fall either side
of k. With the tolerance such a value lands in the bin that starts at the edge; the price is
that a confidence below an edge by less than 1e-9/M counts as on it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

EDGE_TOLERANCE = 1e-9
"""Added to c·M before the floor, so decimal edges fall in the bin that starts there."""


def check_bins(bins: int, name: str = "bins") -> int:
    """``bins`` as an int, or a ValueError when it is not a positive integer."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"{name} must be a positive integer; got {bins!r}")
    return int(bins)


def _first_bad(name: str, values: FloatArray, bad: BoolArray, expected: str) -> ValueError:
    where = np.unravel_index(int(np.flatnonzero(bad)[0]), values.shape)
    position = ", ".join(str(int(i)) for i in where)
    return ValueError(f"{name}[{position}] = {values[where]!r}; expected {expected}")


def unit_interval(name: str, values: npt.ArrayLike, ndim: int = 1) -> FloatArray:
    """``values`` as float64, or a ValueError naming ``name`` when they hold NaN, ±inf or
    numbers outside [0, 1], or do not have ``ndim`` dimensions."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array; got shape {v.shape}")
    bad = ~((v >= 0.0) & (v <= 1.0))  # NaN compares false, so it is bad too
    if bad.any():
        raise _first_bad(name, v, bad, "a finite number in [0, 1]")
    return v


def outcomes(name: str, values: npt.ArrayLike, size: int) -> BoolArray:
    """``values`` (booleans, or numbers 0 and 1) as a bool array of length ``size``."""
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != size:
        raise ValueError(f"{name} must be a 1-d array of {size} values; got shape {v.shape}")
    if v.dtype == np.bool_:
        return v
    f = v.astype(np.float64)
    bad = ~((f == 0.0) | (f == 1.0))
    if bad.any():
        raise _first_bad(name, f, bad, "a boolean, 0 or 1")
    return f == 1.0


def class_indices(name: str, values: npt.ArrayLike, size: int, classes: int) -> IntArray:
    """``values`` as int64 indices in [0, classes), one per sample (``size`` of them)."""
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != size:
        raise ValueError(f"{name} must be a 1-d array of {size} values; got shape {v.shape}")
    if v.size and not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices; got dtype {v.dtype}")
    idx = v.astype(np.int64)
    bad = (idx < 0) | (idx >= classes)
    if bad.any():
        raise _first_bad(name, idx.astype(np.float64), bad, f"a class index in [0, {classes})")
    return idx


def bin_index(
    confidences: npt.ArrayLike,
    bins: int,
    scale: int | None = None,
    name: str = "confidences",
) -> IntArray:
    """Bin of each confidence: ``floor(c·scale + EDGE_TOLERANCE)`` capped at ``bins − 1``.

    ``scale`` defaults to ``bins``, which puts 1.0 in the last bin (the reliability rule);
    ``scale = bins − 1`` gives 1.0 a cell of its own (the fine histogram of risk–coverage).
    Any shape is accepted; NaN or values outside [0, 1] raise a ValueError naming ``name``.
    """
    m = check_bins(bins)
    c = np.asarray(confidences, dtype=np.float64)
    c = unit_interval(name, c, ndim=c.ndim)
    k = m if scale is None else check_bins(scale, "scale")
    idx: IntArray = np.minimum(np.floor(c * k + EDGE_TOLERANCE).astype(np.int64), m - 1)
    return idx
