"""Per-segment calibration: which segment an event is in, the map that decides it, refits.

A model version may name a segment key (a feature or a metadata key, such as ``sport``);
each value of it is a segment with a calibrator of its own, refitted on the segment's last
W labeled events (their raw top-label confidence and whether the prediction was right).
At serve time a segment's map decides its events; a segment without a map (too few
labels, a failed fit, beyond the per-version cap) falls back to the model version's map,
and a map that fails to apply falls back to identity, never to an error.

The labeled pairs are kept as small integers (:func:`encode_pair`), so a segment's window
of 500 is a Redis list of about 2 KB (layout in :mod:`shared.windows.segments`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shared.contracts.batches import PredictionColumns
from shared.recalibration.artifact import artifact_version, make_artifact
from shared.recalibration.data import FitData, FitFailure, FloatArray
from shared.recalibration.maps import IDENTITY, CalibrationMap
from shared.recalibration.methods import FitOptions, fit

logger = logging.getLogger(__name__)

PAIR_SCALE = 10_000
"""Confidences are kept to 1e-4 in the segment window: fine enough for any fit, and an
integer Redis stores in a few bytes."""


def segment_id(key: str, value: str) -> str:
    """The name of one segment of a model version: ``<key>=<value>``."""
    return f"{key}={value}"


def _category(value: float) -> str | None:
    if value != value:  # NaN: missing
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def segment_values(
    key: str,
    n: int,
    numeric: Mapping[str, FloatArray],
    categorical: Mapping[str, Sequence[str]],
    metadata: Sequence[Mapping[str, str]] | None,
) -> list[str | None]:
    """The segment value of every event: its category, number (``3``, ``0.5``) or metadata
    value under ``key``; None where the event has none (missing = NaN or empty string).
    A categorical feature wins over a numeric one, a feature over metadata."""
    if key in categorical:
        return [c if c else None for c in categorical[key]]
    if key in numeric:
        return [_category(v) for v in np.asarray(numeric[key], dtype=np.float64).tolist()]
    if metadata:
        return [m.get(key) or None for m in metadata]
    return [None] * n


def batch_segments(key: str | None, cols: PredictionColumns) -> list[str | None] | None:
    """:func:`segment_values` of a prediction batch under ``key``; None without a key."""
    if key is None:
        return None
    return segment_values(
        key, len(cols), cols.numeric_features, cols.categorical_features, cols.metadata
    )


def segment_of(
    key: str,
    features: Mapping[str, float | str] | None,
    metadata: Mapping[str, str] | None,
) -> str | None:
    """One event's segment value under ``key``, by :func:`segment_values`' rule, from an
    event given as mappings (``POST /api/calibrate``): a category as it is, a number as
    ``3`` or ``0.5``, else the metadata value; None where the event has none."""
    value = (features or {}).get(key)
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _category(float(value))
    return (metadata or {}).get(key) or None


# --- the labeled window ---------------------------------------------------------------------


def encode_pair(confidence: float, correct: bool) -> int:
    """One labeled event as an integer: q = round(c · 10⁴) when right, −(q + 1) when wrong."""
    c = min(max(confidence, 0.0), 1.0) if confidence == confidence else 0.0
    q = round(c * PAIR_SCALE)
    return q if correct else -(q + 1)


def decode_pairs(values: Sequence[int | str | bytes]) -> tuple[FloatArray, np.ndarray]:
    """(confidences, correct) of encoded pairs, in the order given."""
    v = np.asarray([int(x) for x in values], dtype=np.int64)
    correct = v >= 0
    q = np.where(correct, v, -v - 1)
    return q.astype(np.float64) / PAIR_SCALE, correct


def refit_due(n_labeled: int, n_at_last_fit: int | None, every: int, min_labels: int) -> bool:
    """A segment refits once it has ``min_labels`` labels, then after every ``every`` new ones
    (several steps arriving together make one fit on the newest window)."""
    if n_labeled < min_labels:
        return False
    return n_at_last_fit is None or n_labeled - n_at_last_fit >= every


# --- fits -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentFitOptions:
    method: str = "isotonic"
    min_labels: int = 50
    clip_low: float = 0.01
    clip_high: float = 0.99


@dataclass(frozen=True, slots=True)
class SegmentFit:
    """A fitted segment map: its version and artifact (JSON object), or why there is none."""

    version: str | None
    artifact: dict[str, object] | None
    rows: int
    reason: str | None = None


def fit_segment(values: Sequence[int | str | bytes], opts: SegmentFitOptions) -> SegmentFit:
    """Fit ``opts.method`` on a segment's window of encoded pairs.

    An isotonic map has its step values clipped to [clip_low, clip_high] in the artifact
    itself (interpolation between clipped steps stays inside); every map is also clipped
    when applied (:class:`ClippedMap`). A failure returns a fit without a version and its
    reason; the segment then falls back."""
    conf, correct = decode_pairs(values)
    data = FitData(confidences=conf, correct=correct)
    result = fit(opts.method, data, FitOptions(min_samples=opts.min_labels))
    if isinstance(result, FitFailure):
        return SegmentFit(None, None, len(conf), f"{result.reason}: {result.message}")
    artifact = result.artifact
    if artifact["kind"] == "isotonic":
        params = dict(artifact["params"])
        params["y"] = np.clip(np.asarray(params["y"]), opts.clip_low, opts.clip_high)
        artifact = make_artifact("isotonic", "confidence", params)
    return SegmentFit(artifact_version(artifact), artifact, len(conf))


# --- serving --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClippedMap:
    """A map whose outputs are kept in [low, high] (a segment map learnt on few events must
    not claim certainty)."""

    inner: CalibrationMap
    low: float
    high: float

    @property
    def version(self) -> str:
        return self.inner.version

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        out = self.inner.apply(confidences, probabilities, logits, class_labels)
        return np.clip(np.asarray(out, dtype=np.float64), self.low, self.high)


def _take(matrix: FloatArray | None, rows: np.ndarray) -> FloatArray | None:
    return None if matrix is None else matrix[rows]


def _safe_apply(
    m: CalibrationMap,
    rows: np.ndarray,
    confidences: FloatArray,
    probabilities: FloatArray | None,
    logits: FloatArray | None,
    class_labels: list[str],
) -> FloatArray | None:
    """The map's output on ``rows``; None when it raises or returns the wrong shape."""
    try:
        out = np.asarray(
            m.apply(
                confidences[rows], _take(probabilities, rows), _take(logits, rows), class_labels
            ),
            dtype=np.float64,
        )
    except Exception:  # a map's fault must never reach the serve path
        logger.exception("calibration map %s failed; falling back", m.version)
        return None
    return out if out.shape == (rows.size,) else None


@dataclass(frozen=True, slots=True)
class Calibrated:
    confidences: FloatArray
    versions: list[str] | None
    """The map version of every event; None when every event used the batch's map."""


def calibrate_segments(
    base: CalibrationMap,
    segment_maps: Mapping[str, CalibrationMap],
    segments: Sequence[str | None] | None,
    confidences: FloatArray,
    probabilities: FloatArray | None = None,
    logits: FloatArray | None = None,
    class_labels: Sequence[str] = (),
) -> Calibrated:
    """Calibrated confidences of a batch: each event by its segment's map when there is one
    (``segment_maps`` by segment value), else by ``base``, and identity where a map fails.

    ``versions`` records which map decided each event, or None when ``base`` decided all.
    """
    n = confidences.shape[0]
    labels = list(class_labels)
    groups: dict[str | None, list[int]] = {}
    for i, value in enumerate(segments if segments is not None else [None] * n):
        groups.setdefault(value if value in segment_maps else None, []).append(i)
    out = np.array(confidences, dtype=np.float64, copy=True)
    versions = [base.version] * n
    for value, idx in groups.items():
        rows = np.asarray(idx, dtype=np.int64)
        chain = [segment_maps[value], base] if value is not None else [base]
        for m in [*chain, IDENTITY]:
            got = _safe_apply(m, rows, confidences, probabilities, logits, labels)
            if got is not None:
                out[rows] = got
                for i in idx:
                    versions[i] = m.version
                break
    same = all(v == base.version for v in versions)
    return Calibrated(out, None if same else versions)
