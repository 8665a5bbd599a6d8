"""Per-segment calibration in-process: which segment an event is in, and the map that decides it.

A model version may name a segment key (a feature or a metadata key, such as ``sport``);
each value of it with a fitted map is a segment whose events that map decides, its outputs
clipped to ``[clip_low, clip_high]``. Every other event (no segment value, or a segment
without a map) is decided by the version's calibrator, and where a map fails to apply the
next one in the chain decides: segment map, then the version's map, then the raw confidence.
This is Caliber's serve-time rule (``shared/recalibration/segments.py`` in the repository,
``segment_of`` and ``calibrate_segments``); tests apply both to the same inputs and require
equal outputs.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from caliber_client.appliers import CalibrationMap, FloatArray

logger = logging.getLogger(__name__)


def _category(value: float) -> str | None:
    if value != value:  # NaN: missing
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def segment_of(
    key: str,
    features: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None,
) -> str | None:
    """One event's segment value under ``key``: a categorical feature as it is, a numeric
    one as ``3`` or ``0.5``, else the metadata value; None where the event has none
    (missing = NaN or the empty string). A feature wins over metadata."""
    value = (features or {}).get(key)
    if isinstance(value, str):
        return value or None
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return _category(float(value))
    return (metadata or {}).get(key) or None


class ClippedMap:
    """A segment's map: its artifact's output kept in ``[low, high]``."""

    def __init__(self, inner: CalibrationMap, low: float, high: float) -> None:
        self.inner, self.low, self.high = inner, low, high

    @property
    def version(self) -> str:
        return self.inner.version

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None = None,
        logits: FloatArray | None = None,
        class_labels: Sequence[str] = (),
    ) -> FloatArray:
        out = self.inner.apply(confidences, probabilities, logits, class_labels)
        return np.clip(np.asarray(out, dtype=np.float64), self.low, self.high)


Map = CalibrationMap | ClippedMap


def _take(matrix: FloatArray | None, rows: Any) -> FloatArray | None:
    return None if matrix is None else np.asarray(matrix, dtype=np.float64)[rows]


def _safe_apply(
    m: Map,
    rows: Any,
    raw: FloatArray,
    probabilities: FloatArray | None,
    logits: FloatArray | None,
    class_labels: Sequence[str],
) -> FloatArray | None:
    """The map's output on ``rows``; None (and a log line) when it raises, answers the wrong
    shape or a non-finite value for a finite confidence."""
    try:
        out = np.asarray(
            m.apply(raw[rows], _take(probabilities, rows), _take(logits, rows), class_labels),
            dtype=np.float64,
        )
    except Exception as exc:  # a serve path never fails on its calibrator
        logger.warning("caliber: calibrator %s failed (%s); falling back", m.version, exc)
        return None
    if out.shape != (rows.size,) or not np.isfinite(out[np.isfinite(raw[rows])]).all():
        logger.warning("caliber: calibrator %s gave an unusable output; falling back", m.version)
        return None
    return out


def calibrate_segments(
    base: Map | None,
    segment_maps: Mapping[str, Map],
    segments: Sequence[str | None] | None,
    confidences: FloatArray,
    probabilities: FloatArray | None = None,
    logits: FloatArray | None = None,
    class_labels: Sequence[str] = (),
) -> FloatArray:
    """Calibrated confidences of a batch: each event by its segment's map when there is one
    (``segment_maps`` by segment value), else by ``base`` (None: the raw confidence), and the
    next in that chain, down to the raw confidence, where a map fails."""
    raw = np.asarray(confidences, dtype=np.float64)
    n = raw.shape[0]
    if segments is not None and len(segments) != n:
        raise ValueError(f"segments: {len(segments)} values for {n} confidences")
    groups: dict[str | None, list[int]] = {}
    for i, value in enumerate(segments if segments is not None else [None] * n):
        groups.setdefault(value if value in segment_maps else None, []).append(i)
    out = np.array(raw, dtype=np.float64, copy=True)
    for value, idx in groups.items():
        rows = np.asarray(idx, dtype=np.int64)
        chain = [segment_maps[value], base] if value is not None else [base]
        for m in chain:
            got = None if m is None else _safe_apply(m, rows, raw, probabilities, logits,
                                                     class_labels)  # fmt: skip
            if got is not None:
                out[rows] = got
                break
    return out
