"""Counting a batch's events into the cells of a reference profile, per event-time bucket.

``shared.drift.profile`` fixes each part's cells; here every event gets its cell index
(−1 when the value is missing) and one ``bincount`` over ``bucket × cells + cell`` counts a
whole batch of one model version into every bucket it touches, so the cost per event is a
few vectorised operations whatever the number of buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.contracts.batches import PredictionColumns
from shared.drift.profile import (
    MISSING_CATEGORY,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)
from shared.windows.drift import CELL_STRIDE, CONFIDENCE_PART, FIRST_FEATURE_PART, LABEL_PART

IntArray = npt.NDArray[np.int64]
Counts = dict[int, dict[int, IntArray]]
"""bucket start (epoch s) → part → counts over the part's cells."""


def numeric_cells(feature: NumericProfile, values: npt.ArrayLike) -> IntArray:
    """Quantile-bin cell, and fine cell offset by the bin count, of each value; a missing
    value gets −1 in both. Returned as a (2, n) array."""
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    coarse = np.searchsorted(np.asarray(feature.edges), x, side="left")
    fine = feature.n_bins + np.searchsorted(feature.fine_edges, x, side="left")
    out = np.stack([coarse, fine]).astype(np.int64)
    out[:, missing] = -1
    return out


def categorical_cells(feature: CategoricalProfile, values: Sequence[str]) -> IntArray:
    index = {c: i for i, c in enumerate(feature.categories)}
    other = len(feature.categories)
    cells = [-1 if v == MISSING_CATEGORY else index.get(v, other) for v in values]
    return np.asarray(cells, dtype=np.int64).reshape(1, -1)


@dataclass(frozen=True, slots=True)
class Part:
    index: int
    name: str
    profile: FeatureProfile


def parts(profile: ReferenceProfile) -> list[Part]:
    """The profile's parts in count-key order (``shared.windows.drift``)."""
    out = [
        Part(CONFIDENCE_PART, profile.confidence.name, profile.confidence),
        Part(LABEL_PART, profile.predicted_labels.name, profile.predicted_labels),
    ]
    for i, (name, feature) in enumerate(profile.features.items()):
        out.append(Part(FIRST_FEATURE_PART + i, name, feature))
    return out


def _part_values(part: Part, cols: PredictionColumns) -> npt.ArrayLike | Sequence[str] | None:
    if part.index == CONFIDENCE_PART:
        return cols.confidences
    if part.index == LABEL_PART:
        return cols.predicted_labels
    if isinstance(part.profile, NumericProfile):
        return cols.numeric_features.get(part.name)
    return cols.categorical_features.get(part.name)


def bucketed_counts(
    profile: ReferenceProfile, batches: Sequence[PredictionColumns], bucket_s: int
) -> Counts:
    """Counts of every part of ``profile`` per event-time bucket over ``batches`` (all of
    the profile's model version). A feature missing from a batch counts nothing there.

    The batches are joined per part first: one binning and one ``bincount`` per part and
    call, not per batch (a batch holds a few events at moderate rates, and the numpy calls'
    fixed cost would dominate)."""
    batches = [cols for cols in batches if len(cols)]
    if not batches:
        return {}
    starts = np.concatenate([(c.event_time_ms // 1000) // bucket_s * bucket_s for c in batches])
    uniq, pos = np.unique(starts, return_inverse=True)
    bounds = np.cumsum([0, *(len(c) for c in batches)]).tolist()
    nb = uniq.size
    out: Counts = {}
    for part in parts(profile):
        cells, where = _part_cells(part, batches, pos, bounds)
        if cells is None:
            continue
        width = part.profile.n_cells
        for row in cells:
            ok = row >= 0
            flat = np.bincount(where[ok] * width + row[ok], minlength=nb * width)
            for b, counts in enumerate(flat.reshape(nb, width)):
                if not counts.any():
                    continue
                slot = out.setdefault(int(uniq[b]), {})
                prev = slot.get(part.index)
                slot[part.index] = counts if prev is None else prev + counts
    return out


def _part_cells(
    part: Part, batches: Sequence[PredictionColumns], pos: IntArray, bounds: list[int]
) -> tuple[IntArray | None, IntArray]:
    """(cells of the part's values over every batch that has the part, (rows, n)) and the
    bucket position of each of those values."""
    values: list[npt.ArrayLike | Sequence[str]] = []
    where: list[IntArray] = []
    for i, cols in enumerate(batches):
        v = _part_values(part, cols)
        if v is not None:
            values.append(v)
            where.append(pos[bounds[i] : bounds[i + 1]])
    if not values:
        return None, pos[:0]
    feature = part.profile
    if isinstance(feature, NumericProfile):
        joined = np.concatenate([np.asarray(v, dtype=np.float64) for v in values])
        return numeric_cells(feature, joined), np.concatenate(where)
    strings = [x for v in values for x in v]  # type: ignore[union-attr]
    return categorical_cells(feature, strings), np.concatenate(where)  # type: ignore[arg-type]


def encode_fields(parts_counts: dict[int, IntArray]) -> dict[str, int]:
    """Redis hash fields ``part × CELL_STRIDE + cell`` of the non-zero counts."""
    fields: dict[str, int] = {}
    for part, counts in parts_counts.items():
        cells = np.flatnonzero(counts)
        for code, value in zip(
            (cells + part * CELL_STRIDE).tolist(), counts[cells].tolist(), strict=True
        ):
            fields[str(code)] = value
    return fields


def decode_fields(
    codes: npt.NDArray[np.int64], values: npt.NDArray[np.int64], widths: dict[int, int]
) -> dict[int, IntArray]:
    """Counts per part from field codes and their (summed) counts; parts ``widths`` does
    not know are ignored, and a part with no field is absent from the result."""
    if not codes.size:
        return {}
    n_parts = max(widths) + 1
    keep = codes < n_parts * CELL_STRIDE
    total = np.bincount(
        codes[keep], weights=values[keep].astype(np.float64), minlength=n_parts * CELL_STRIDE
    ).reshape(n_parts, CELL_STRIDE)
    present = np.bincount(codes[keep] // CELL_STRIDE, minlength=n_parts)
    return {
        part: np.rint(total[part, :width]).astype(np.int64)
        for part, width in widths.items()
        if present[part]
    }


def hashes_to_fields(
    hashes: Sequence[dict[bytes, bytes]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(codes, counts) of bucket hashes as ``HGETALL`` returns them (tests, tools)."""
    codes = [int(k) for h in hashes for k in h]
    values = [int(v) for h in hashes for v in h.values()]
    return np.asarray(codes, dtype=np.int64), np.asarray(values, dtype=np.int64)
