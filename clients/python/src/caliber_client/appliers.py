"""Calibration maps applied in-process: the artifact formulas of Caliber's policy.

The same maths as Caliber's serve path (``shared/recalibration/appliers.py`` in the
repository; the formulas are in ``docs/recalibration.md``); a test applies both to the same
inputs and requires equal outputs. An artifact is JSON::

    {"format": 1, "kind": ..., "input": "confidence" | "probabilities" | "logits",
     "classes": [...], "params": {...}}

Every map returns the calibrated top-label confidence; a vector map given a row without its
vector, or class labels that are not the artifact's, leaves the raw confidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
EPS = 1e-12


class ArtifactError(ValueError):
    """An artifact that cannot be applied (unknown kind or input, missing parameter)."""


def _logit(c: FloatArray) -> FloatArray:
    c = np.clip(c, EPS, 1.0 - EPS)
    out: FloatArray = np.log(c) - np.log1p(-c)
    return out


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _softmax_at(z: FloatArray, at: Any) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e[np.arange(z.shape[0]), at] / e.sum(axis=1)
    return out


def _isotonic(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    out = np.interp(c, np.asarray(p["x"], float), np.asarray(p["y"], float))
    return np.where(np.isnan(c), np.nan, out)


def _histogram(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    values = np.asarray(p["values"], dtype=np.float64)
    idx = np.clip(np.floor(np.nan_to_num(c, nan=0.0) * values.size).astype(np.int64), 0,
                  values.size - 1)  # fmt: skip
    return np.where(np.isnan(c), np.nan, values[idx])


def _beta(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    s = np.clip(c, EPS, 1.0 - EPS)
    return _sigmoid(p["a"] * np.log(s) - p["b"] * np.log1p(-s) + p["c"])


CONFIDENCE_MAPS: dict[str, Callable[[FloatArray, Mapping[str, Any]], FloatArray]] = {
    "temperature": lambda c, p: _sigmoid(p["beta"] * _logit(c)),
    "platt": lambda c, p: _sigmoid(p["a"] * _logit(c) + p["b"]),
    "beta": _beta,
    "isotonic": _isotonic,
    "histogram": _histogram,
}


def _vector_scaling(z: FloatArray, p: Mapping[str, Any], order: Any) -> FloatArray:
    w = np.asarray(p["w"], dtype=np.float64)[order]
    b = np.asarray(p["b"], dtype=np.float64)[order]
    return _softmax_at(z * w + b, z.argmax(axis=1))


def _isotonic_vec(z: FloatArray, p: Mapping[str, Any], order: Any) -> FloatArray:
    prob = np.exp(z)
    q = np.empty_like(prob)
    for j, k in enumerate(order):
        q[:, j] = np.interp(prob[:, j], np.asarray(p["x"][k], float), np.asarray(p["y"][k], float))
    total = q.sum(axis=1)
    top = q[np.arange(q.shape[0]), z.argmax(axis=1)]
    out: FloatArray = np.where(total > 0, top / np.where(total > 0, total, 1.0), 1.0 / q.shape[1])
    return out


VECTOR_MAPS: dict[str, Callable[[FloatArray, Mapping[str, Any], Any], FloatArray]] = {
    "temperature": lambda z, p, order: _softmax_at(p["beta"] * z, z.argmax(axis=1)),
    "vector_scaling": _vector_scaling,
    "isotonic": _isotonic_vec,
}


class CalibrationMap:
    """One artifact, ready to apply to batches."""

    def __init__(self, version: str, artifact: Mapping[str, Any]) -> None:
        kind, input_ = artifact.get("kind"), artifact.get("input", "confidence")
        table: Mapping[str, Any] = CONFIDENCE_MAPS if input_ == "confidence" else VECTOR_MAPS
        if input_ not in ("confidence", "probabilities", "logits") or kind not in table:
            raise ArtifactError(f"calibrator kind {kind!r} cannot take input {input_!r}")
        params = artifact.get("params")
        if not isinstance(params, Mapping):
            raise ArtifactError(f"calibrator {version!r} has no 'params' object")
        self.classes = tuple(artifact.get("classes") or ())
        if input_ != "confidence" and len(self.classes) < 2:
            raise ArtifactError(f"calibrator {version!r} on {input_} needs 'classes'")
        self.version, self.kind, self.input, self.params = version, str(kind), input_, params

    def _order(self, class_labels: Sequence[str]) -> Any:
        if tuple(class_labels) == self.classes:
            return np.arange(len(self.classes))
        if sorted(class_labels) == sorted(self.classes):
            pos = {c: i for i, c in enumerate(self.classes)}
            return np.asarray([pos[c] for c in class_labels])
        return None

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None = None,
        logits: FloatArray | None = None,
        class_labels: Sequence[str] = (),
    ) -> FloatArray:
        """Calibrated top-label confidences of a batch (rows of the vectors in
        ``class_labels`` order)."""
        confidences = np.asarray(confidences, dtype=np.float64)
        if self.input == "confidence":
            return CONFIDENCE_MAPS[self.kind](confidences, self.params)
        vectors = logits if self.input == "logits" else probabilities
        order = self._order(class_labels)
        if vectors is None or order is None:
            return confidences
        vectors = np.asarray(vectors, dtype=np.float64)
        have = np.isfinite(vectors).all(axis=1)
        if not have.any():
            return confidences
        z = vectors[have]
        if self.input == "probabilities":
            z = np.log(np.clip(z, 0.0, 1.0) + EPS)
        out = np.array(confidences, dtype=np.float64, copy=True)
        out[have] = VECTOR_MAPS[self.kind](z, self.params, order)
        return out
