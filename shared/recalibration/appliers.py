"""Serve-time application of calibration artifacts, vectorised over a batch.

Every map returns the calibrated top-label confidence of each row: for a vector map, the
calibrated probability of the class the raw vector ranks first (the predicted label).
A vector map given a row without its vector (NaN row) or a batch whose class labels are
not the artifact's leaves that row's raw confidence: uncalibrated, but never a guess.
These builders are registered with the policy's map builder in ``shared.recalibration.maps``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.recalibration.data import EPS, FloatArray


def logit(c: FloatArray) -> FloatArray:
    c = np.clip(c, EPS, 1.0 - EPS)
    return np.log(c) - np.log1p(-c)


def sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def softmax_top(z: FloatArray, at: Any) -> FloatArray:
    """softmax(z) row-wise, read at column ``at`` (one index per row)."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    rows = np.arange(z.shape[0])
    out: FloatArray = e[rows, at] / e.sum(axis=1)
    return out


# --- top-label maps: calibrated = f(confidence) -------------------------------------------


def temperature_conf(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    return sigmoid(p["beta"] * logit(c))


def platt_conf(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    return sigmoid(p["a"] * logit(c) + p["b"])


def beta_conf(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    s = np.clip(c, EPS, 1.0 - EPS)
    return sigmoid(p["a"] * np.log(s) - p["b"] * np.log1p(-s) + p["c"])


def isotonic_conf(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    out: FloatArray = np.interp(c, p["x"], p["y"])  # constant beyond the ends: clip
    return np.where(np.isnan(c), np.nan, out)


def histogram_conf(c: FloatArray, p: Mapping[str, Any]) -> FloatArray:
    values = np.asarray(p["values"], dtype=np.float64)
    m = values.size
    idx = np.clip(np.floor(np.nan_to_num(c, nan=0.0) * m).astype(np.int64), 0, m - 1)
    return np.where(np.isnan(c), np.nan, values[idx])


CONF_APPLY: dict[str, Callable[[FloatArray, Mapping[str, Any]], FloatArray]] = {
    "temperature": temperature_conf,
    "platt": platt_conf,
    "beta": beta_conf,
    "isotonic": isotonic_conf,
    "histogram": histogram_conf,
}

# --- vector maps: calibrated = g(score vector)[argmax] -----------------------------------


def temperature_vec(z: FloatArray, p: Mapping[str, Any], order: Any) -> FloatArray:
    return softmax_top(p["beta"] * z, z.argmax(axis=1))


def vector_scaling_vec(z: FloatArray, p: Mapping[str, Any], order: Any) -> FloatArray:
    w = np.asarray(p["w"], dtype=np.float64)[order]
    b = np.asarray(p["b"], dtype=np.float64)[order]
    return softmax_top(z * w + b, z.argmax(axis=1))


def isotonic_vec(z: FloatArray, p: Mapping[str, Any], order: Any) -> FloatArray:
    """One-vs-rest isotonic per class on p_k (z holds log p), rows renormalised."""
    prob = np.exp(z)
    q = np.empty_like(prob)
    xs, ys = p["x"], p["y"]
    for j, k in enumerate(order):
        q[:, j] = np.interp(prob[:, j], xs[k], ys[k])
    total = q.sum(axis=1)
    top = q[np.arange(q.shape[0]), z.argmax(axis=1)]
    k = q.shape[1]
    out: FloatArray = np.where(total > 0, top / np.where(total > 0, total, 1.0), 1.0 / k)
    return out


VEC_APPLY: dict[str, Callable[[FloatArray, Mapping[str, Any], Any], FloatArray]] = {
    "temperature": temperature_vec,
    "vector_scaling": vector_scaling_vec,
    "isotonic": isotonic_vec,
}


@dataclass(slots=True)
class ArtifactMap:
    """A :class:`shared.recalibration.maps.CalibrationMap` built from an artifact."""

    version: str
    kind: str
    input: str
    params: dict[str, Any]
    classes: tuple[str, ...] = ()
    _orders: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Parse once: arrays for the breakpoints of isotonic maps.
        if self.kind == "isotonic":
            if self.input == "confidence":
                self.params = {
                    "x": np.asarray(self.params["x"], dtype=np.float64),
                    "y": np.asarray(self.params["y"], dtype=np.float64),
                }
            else:
                self.params = {
                    "x": [np.asarray(v, dtype=np.float64) for v in self.params["x"]],
                    "y": [np.asarray(v, dtype=np.float64) for v in self.params["y"]],
                }

    def _order(self, class_labels: list[str]) -> Any:
        """Artifact column of each batch column, or None when the labels differ."""
        key = tuple(class_labels)
        if key not in self._orders:
            if key == self.classes:
                self._orders[key] = np.arange(len(key))
            elif sorted(key) == sorted(self.classes):
                pos = {c: i for i, c in enumerate(self.classes)}
                self._orders[key] = np.asarray([pos[c] for c in key])
            else:
                self._orders[key] = None
        return self._orders[key]

    def apply(
        self,
        confidences: FloatArray,
        probabilities: FloatArray | None,
        logits: FloatArray | None,
        class_labels: list[str],
    ) -> FloatArray:
        if self.input == "confidence":
            return CONF_APPLY[self.kind](confidences, self.params)
        vectors = logits if self.input == "logits" else probabilities
        order = self._order(class_labels)
        if vectors is None or order is None:
            return confidences
        have = np.isfinite(vectors).all(axis=1)
        if not have.any():
            return confidences
        z = vectors[have]
        if self.input == "probabilities":
            z = np.log(np.clip(z, 0.0, 1.0) + EPS)
        out = np.array(confidences, dtype=np.float64, copy=True)
        out[have] = VEC_APPLY[self.kind](z, self.params, order)
        return out


KINDS = ("temperature", "platt", "isotonic", "histogram", "beta", "vector_scaling")


class ArtifactError(ValueError):
    """An artifact that cannot be applied (unknown input, missing parameter)."""


def build(version: str, spec: Mapping[str, Any]) -> ArtifactMap:
    """The map of an artifact; raises :class:`ArtifactError` naming what is wrong."""
    kind = spec.get("kind")
    input_ = spec.get("input", "confidence")
    table: Mapping[str, Any] = CONF_APPLY if input_ == "confidence" else VEC_APPLY
    if input_ not in ("confidence", "probabilities", "logits") or kind not in table:
        raise ArtifactError(f"calibrator kind {kind!r} cannot take input {input_!r}")
    params = spec.get("params")
    if not isinstance(params, Mapping):
        raise ArtifactError(f"calibrator {version!r} has no 'params' object")
    classes = tuple(spec.get("classes") or ())
    if input_ != "confidence" and len(classes) < 2:
        raise ArtifactError(f"calibrator {version!r} on {input_} needs 'classes'")
    try:
        return ArtifactMap(version, str(kind), str(input_), dict(params), classes)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"calibrator {version!r}: bad params ({exc})") from exc
