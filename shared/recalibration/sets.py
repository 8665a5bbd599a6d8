"""Calibration sets: immutable, content-addressed snapshots of labeled predictions.

A set holds, per row: the event id, event time, raw confidence, whether the prediction was
right, the index of its ground truth and predicted label in ``classes`` (−1 when not
there), and the probability vector (NaN where the event carried none). Its canonical
serialisation is::

    b"caliber-calibration-set/1\\n" + canonical JSON of the manifest + b"\\n" + columns

with the columns little-endian in this order: event ids (16 bytes each), event times
(int64 ms), confidences (float64), correct (uint8), true index (int32), predicted index
(int32), probabilities (float64, N×K row-major, only when K > 0). Rows are ordered by
(event time, event id). The set's hash is the SHA-256 of those bytes; the stored row
column is the columns part, zlib-compressed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.recalibration.data import BoolArray, FitData, FloatArray, IntArray, log_scores

MAGIC = b"caliber-calibration-set/1\n"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a set is: whose predictions, which window, which labels, how sampled."""

    tenant: str
    model_name: str
    model_version: str
    model_version_id: int | None
    window_start_ms: int
    window_end_ms: int
    label_cutoff_ms: int
    rows: int
    classes: tuple[str, ...]
    sampling: Mapping[str, Any]
    """``{"method": "all" | "hash", "available": n, "max_rows": m}``."""
    segment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_version_id": self.model_version_id,
            "segment": self.segment,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
            "label_cutoff_ms": self.label_cutoff_ms,
            "rows": self.rows,
            "classes": list(self.classes),
            "sampling": dict(self.sampling),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Manifest:
        return cls(
            tenant=obj["tenant"],
            model_name=obj["model_name"],
            model_version=obj["model_version"],
            model_version_id=obj.get("model_version_id"),
            window_start_ms=int(obj["window_start_ms"]),
            window_end_ms=int(obj["window_end_ms"]),
            label_cutoff_ms=int(obj["label_cutoff_ms"]),
            rows=int(obj["rows"]),
            classes=tuple(obj["classes"]),
            sampling=dict(obj["sampling"]),
            segment=obj.get("segment"),
        )


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    manifest: Manifest
    event_ids: npt.NDArray[np.bytes_]
    event_time_ms: IntArray
    confidences: FloatArray
    correct: BoolArray
    true_index: IntArray
    predicted_index: IntArray
    probabilities: FloatArray  # (N, K), K = len(classes) or 0
    _hash: list[str] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.confidences.size)

    def columns_bytes(self) -> bytes:
        parts = [
            self.event_ids.astype("S16").tobytes(),
            self.event_time_ms.astype("<i8").tobytes(),
            self.confidences.astype("<f8").tobytes(),
            self.correct.astype(np.uint8).tobytes(),
            self.true_index.astype("<i4").tobytes(),
            self.predicted_index.astype("<i4").tobytes(),
        ]
        if self.probabilities.shape[1]:
            parts.append(np.ascontiguousarray(self.probabilities, dtype="<f8").tobytes())
        return b"".join(parts)

    def canonical(self) -> bytes:
        return MAGIC + _canonical_json(self.manifest.to_json()) + b"\n" + self.columns_bytes()

    @property
    def hash(self) -> str:
        if not self._hash:
            self._hash.append(hashlib.sha256(self.canonical()).hexdigest())
        return self._hash[0]

    def compressed_rows(self) -> bytes:
        return zlib.compress(self.columns_bytes(), 6)

    @classmethod
    def from_stored(cls, manifest: Manifest, compressed: bytes) -> CalibrationSet:
        raw = zlib.decompress(compressed)
        n = manifest.rows
        k = (len(raw) - n * (16 + 8 + 8 + 1 + 4 + 4)) // (8 * n) if n else 0
        offsets = np.cumsum([0, 16 * n, 8 * n, 8 * n, n, 4 * n, 4 * n])
        buf = memoryview(raw)

        def part(i: int, dtype: str) -> Any:
            return np.frombuffer(buf[offsets[i] : offsets[i + 1]], dtype=dtype)

        probs = np.frombuffer(buf[offsets[6] :], dtype="<f8").reshape(n, k)
        return cls(
            manifest,
            part(0, "S16"),
            part(1, "<i8").astype(np.int64),
            part(2, "<f8").astype(np.float64),
            part(3, "u1").astype(bool),
            part(4, "<i4").astype(np.int64),
            part(5, "<i4").astype(np.int64),
            probs.astype(np.float64),
        )

    def split_by_time(self, holdout_fraction: float) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Row indices of the older part (fit) and the newest part (held out)."""
        n = len(self)
        n_hold = round(n * holdout_fraction)
        order = np.arange(n)  # rows are already in event-time order
        return order[: n - n_hold], order[n - n_hold :]

    def fit_data(self, rows: npt.NDArray[Any] | None = None) -> FitData:
        """The rows as FitData; vectors only when every chosen row has one and a known class."""
        idx = np.arange(len(self)) if rows is None else rows
        conf, ok = self.confidences[idx], self.correct[idx]
        if self.probabilities.shape[1] >= 2:
            p, t = self.probabilities[idx], self.true_index[idx]
            if np.isfinite(p).all() and (t >= 0).all():
                return FitData(conf, ok, self.manifest.classes, log_scores(p), t)
        return FitData(conf, ok, self.manifest.classes)


def build_set(
    manifest_fields: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    available: int,
    max_rows: int,
) -> CalibrationSet:
    """A set from predictions rows (event_id, event_time_ms, confidence, predicted_label,
    ground_truth, probabilities as a label → p mapping or None), in any order."""
    ordered = sorted(rows, key=lambda r: (int(r["event_time_ms"]), str(r["event_id"])))
    vector_labels = sorted({k for r in ordered if r["probabilities"] for k in r["probabilities"]})
    if vector_labels:
        classes = tuple(vector_labels)
    else:
        classes = tuple(
            sorted({r["ground_truth"] for r in ordered} | {r["predicted_label"] for r in ordered})
        )
    pos = {c: i for i, c in enumerate(classes)}
    n, k = len(ordered), (len(classes) if vector_labels else 0)
    probs = np.full((n, k), np.nan)
    for i, r in enumerate(ordered):
        p = r["probabilities"]
        if k and p and set(p) == set(classes):
            probs[i] = [float(p[c]) for c in classes]
    manifest = Manifest(
        rows=n,
        classes=classes,
        sampling={
            "method": "all" if available <= max_rows else "hash",
            "available": int(available),
            "max_rows": int(max_rows),
        },
        **manifest_fields,
    )
    return CalibrationSet(
        manifest=manifest,
        event_ids=np.array([uuid.UUID(str(r["event_id"])).bytes for r in ordered], dtype="S16"),
        event_time_ms=np.array([int(r["event_time_ms"]) for r in ordered], dtype=np.int64),
        confidences=np.array([float(r["confidence"]) for r in ordered], dtype=np.float64),
        correct=np.array([r["ground_truth"] == r["predicted_label"] for r in ordered], bool),
        true_index=np.array([pos.get(r["ground_truth"], -1) for r in ordered], dtype=np.int64),
        predicted_index=np.array(
            [pos.get(r["predicted_label"], -1) for r in ordered], dtype=np.int64
        ),
        probabilities=probs,
    )
