"""Columnar micro-batches: many events of one model version as parallel numpy arrays.

These are the in-memory forms of the ``PredictionBatch``, ``DecisionBatch`` and
``LabelBatch`` Avro records (see ``schemas/``). Workers decode one Kafka message straight into
arrays, compute with numpy and encode arrays back, so per-event Python work stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Record = dict[str, Any]


def model_key(tenant: str, model_name: str, model_version: str) -> str:
    """The Kafka message key and Redis key part of one model version."""
    return f"{tenant}/{model_name}/{model_version}"


def split_model_key(key: str) -> tuple[str, str, str]:
    tenant, name, version = key.split("/", 2)
    return tenant, name, version


def _floats(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def size_of(values: Any) -> int:
    """Length of an optional array: a list, a numpy array or None (never its truth value,
    which a numpy array does not have)."""
    return 0 if values is None else len(values)


def _matrix(flat: Any, n: int, width: int) -> FloatArray | None:
    if not size_of(flat) or width == 0:
        return None
    return np.asarray(flat, dtype=np.float64).reshape(n, width)


_NO_FLOATS: FloatArray = np.empty(0, np.float64)
_NO_INTS: IntArray = np.empty(0, np.int64)


def _flat_array(matrix: FloatArray | None) -> FloatArray:
    return _NO_FLOATS if matrix is None else matrix.ravel()


def _statuses(review: BoolArray) -> list[str]:
    return ["review" if r else "auto" for r in review.tolist()]


def _tolist(record: Record, names: tuple[str, ...]) -> Record:
    """``record`` with the numpy arrays among ``names`` turned into lists."""
    for name in names:
        value = record[name]
        if isinstance(value, np.ndarray):
            record[name] = value.tolist()
    return record


@dataclass(slots=True)
class PredictionColumns:
    """Predictions of one model version; row i of every array is event i."""

    tenant: str
    model_name: str
    model_version: str
    event_ids: list[str]
    event_time_ms: IntArray
    predicted_labels: list[str]
    confidences: FloatArray
    model_version_id: int | None = None
    class_labels: list[str] = field(default_factory=list)
    probabilities: FloatArray | None = None
    """N x len(class_labels); a NaN row means that event had no probabilities."""
    logits: FloatArray | None = None
    numeric_features: dict[str, FloatArray] = field(default_factory=dict)
    categorical_features: dict[str, list[str]] = field(default_factory=dict)
    ground_truths: list[str | None] | None = None
    uncertainties: FloatArray | None = None
    metadata: list[dict[str, str]] | None = None

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def key(self) -> str:
        return model_key(self.tenant, self.model_name, self.model_version)

    def take(self, rows: npt.ArrayLike) -> PredictionColumns:
        """The subset of rows ``rows`` (integer indices or a boolean mask), in that order."""
        idx = np.asarray(rows)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        elif not idx.size:
            idx = idx.astype(np.intp)  # [] reads as floats, which cannot index
        pick = idx.tolist()
        return replace(
            self,
            event_ids=[self.event_ids[i] for i in pick],
            event_time_ms=self.event_time_ms[idx],
            predicted_labels=[self.predicted_labels[i] for i in pick],
            confidences=self.confidences[idx],
            probabilities=None if self.probabilities is None else self.probabilities[idx],
            logits=None if self.logits is None else self.logits[idx],
            numeric_features={k: v[idx] for k, v in self.numeric_features.items()},
            categorical_features={
                k: [v[i] for i in pick] for k, v in self.categorical_features.items()
            },
            ground_truths=None
            if self.ground_truths is None
            else [self.ground_truths[i] for i in pick],
            uncertainties=None if self.uncertainties is None else self.uncertainties[idx],
            metadata=None if self.metadata is None else [self.metadata[i] for i in pick],
        )

    def to_record(self) -> Record:
        """The ``PredictionBatch`` record with every array a list (fastavro's shape)."""
        rec = self.to_columnar_record()
        rec["numeric_features"] = {k: v.tolist() for k, v in self.numeric_features.items()}
        return _tolist(
            rec, ("event_time_ms", "confidences", "probabilities", "logits", "uncertainties")
        )

    def to_columnar_record(self) -> Record:
        """The ``PredictionBatch`` record with numeric arrays as numpy arrays, for
        :meth:`AvroCodec.encode` (no copy through Python lists)."""
        return {
            "tenant": self.tenant,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_version_id": self.model_version_id,
            "event_ids": self.event_ids,
            "event_time_ms": self.event_time_ms,
            "predicted_labels": self.predicted_labels,
            "confidences": self.confidences,
            "class_labels": self.class_labels,
            "probabilities": _flat_array(self.probabilities),
            "logits": _flat_array(self.logits),
            "numeric_features": dict(self.numeric_features),
            "categorical_features": self.categorical_features,
            "ground_truths": self.ground_truths or [],
            "uncertainties": _NO_FLOATS if self.uncertainties is None else self.uncertainties,
            "metadata": self.metadata or [],
        }

    @classmethod
    def from_record(cls, rec: Record) -> PredictionColumns:
        """From a decoded record: numeric arrays as lists or numpy arrays (``columnar``)."""
        n = len(rec["event_ids"])
        width = len(rec.get("class_labels") or ())
        return cls(
            tenant=rec["tenant"],
            model_name=rec["model_name"],
            model_version=rec["model_version"],
            model_version_id=rec.get("model_version_id"),
            event_ids=rec["event_ids"],
            event_time_ms=np.asarray(rec["event_time_ms"], dtype=np.int64),
            predicted_labels=rec["predicted_labels"],
            confidences=_floats(rec["confidences"]),
            class_labels=list(rec.get("class_labels") or ()),
            probabilities=_matrix(rec.get("probabilities"), n, width),
            logits=_matrix(rec.get("logits"), n, width),
            numeric_features={
                k: _floats(v) for k, v in (rec.get("numeric_features") or {}).items()
            },
            categorical_features=dict(rec.get("categorical_features") or {}),
            ground_truths=rec.get("ground_truths") or None,
            uncertainties=_floats(rec["uncertainties"])
            if size_of(rec.get("uncertainties"))
            else None,
            metadata=rec.get("metadata") or None,
        )


def _shape(cols: PredictionColumns) -> tuple[Any, ...]:
    """What batches must share to be joined into one: the model version and which
    optional columns and features they carry."""
    return (
        cols.key,
        cols.model_version_id,
        tuple(cols.class_labels),
        cols.probabilities is None,
        cols.logits is None,
        tuple(cols.numeric_features),
        tuple(cols.categorical_features),
        cols.ground_truths is None,
        cols.uncertainties is None,
        cols.metadata is None,
    )


def concat_predictions(parts: list[PredictionColumns]) -> PredictionColumns:
    """The rows of ``parts`` (all of one :func:`_shape`) in order, as one batch."""
    first = parts[0]
    if len(parts) == 1:
        return first

    def stacked(arrays: list[FloatArray | None]) -> FloatArray | None:
        present = [a for a in arrays if a is not None]
        return np.concatenate(present) if present else None

    return replace(
        first,
        event_ids=[e for c in parts for e in c.event_ids],
        event_time_ms=np.concatenate([c.event_time_ms for c in parts]),
        predicted_labels=[v for c in parts for v in c.predicted_labels],
        confidences=np.concatenate([c.confidences for c in parts]),
        probabilities=stacked([c.probabilities for c in parts]),
        logits=stacked([c.logits for c in parts]),
        numeric_features={
            k: np.concatenate([c.numeric_features[k] for c in parts])
            for k in first.numeric_features
        },
        categorical_features={
            k: [v for c in parts for v in c.categorical_features[k]]
            for k in first.categorical_features
        },
        ground_truths=None
        if first.ground_truths is None
        else [g for c in parts for g in c.ground_truths or ()],
        uncertainties=stacked([c.uncertainties for c in parts]),
        metadata=None if first.metadata is None else [m for c in parts for m in c.metadata or ()],
    )


def join_runs(batches: list[PredictionColumns]) -> list[PredictionColumns]:
    """Consecutive batches of each model version joined into one where their shapes match.

    The events of one model version keep their order (a batch of another shape ends the run
    and starts a new one after it), so what a reader of one key sees is the same rows in the
    same order, in fewer and larger messages."""
    return [concat_predictions([batches[i] for i in run]) for run in runs_of(batches)]


def runs_of(batches: list[PredictionColumns]) -> list[list[int]]:
    """The runs :func:`join_runs` joins, as indices into ``batches``, in its order."""
    runs: list[list[int]] = []
    open_runs: dict[str, tuple[tuple[Any, ...], int]] = {}
    for i, cols in enumerate(batches):
        shape = _shape(cols)
        current = open_runs.get(cols.key)
        if current is not None and current[0] == shape:
            runs[current[1]].append(i)
        else:
            open_runs[cols.key] = (shape, len(runs))
            runs.append([i])
    return runs


@dataclass(slots=True)
class DecisionColumns:
    """The policy's decisions on one batch of predictions."""

    predictions: PredictionColumns
    calibrated_confidences: FloatArray
    review: BoolArray
    """True where the prediction was withheld for human review."""
    threshold: float
    threshold_source: str
    calibrator_version: str
    decided_at_ms: int
    calibrator_versions: list[str] | None = None
    """The map version that decided each event; None = every event used
    ``calibrator_version``."""
    segment_key: str | None = None
    """The model version's segment key (per-segment recalibration), when it has one."""
    segments: list[str | None] | None = None
    """Each event's value of ``segment_key`` (None = the event has none)."""
    shadow_calibrator_version: str | None = None
    """The calibrator under rollout that ran beside the active one (None = none)."""
    shadow_confidences: FloatArray | None = None
    """Per event, the output of the map that did not decide it (see
    ``shared.recalibration.serving``)."""
    shadow_review: BoolArray | None = None

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def key(self) -> str:
        return self.predictions.key

    def take(self, rows: npt.ArrayLike) -> DecisionColumns:
        idx = np.asarray(rows, dtype=np.int64)
        versions = self.calibrator_versions
        return replace(
            self,
            predictions=self.predictions.take(idx),
            calibrated_confidences=self.calibrated_confidences[idx],
            review=self.review[idx],
            calibrator_versions=None if versions is None else [versions[i] for i in idx.tolist()],
            segments=None if self.segments is None else [self.segments[i] for i in idx.tolist()],
            shadow_confidences=None
            if self.shadow_confidences is None
            else self.shadow_confidences[idx],
            shadow_review=None if self.shadow_review is None else self.shadow_review[idx],
        )

    def to_record(self) -> Record:
        """The ``DecisionBatch`` record with every array a list (fastavro's shape)."""
        rec = self.to_columnar_record()
        rec["predictions"] = self.predictions.to_record()
        return _tolist(rec, ("calibrated_confidences", "shadow_confidences"))

    def to_columnar_record(self) -> Record:
        """The ``DecisionBatch`` record with numeric arrays as numpy arrays."""
        return {
            "predictions": self.predictions.to_columnar_record(),
            "calibrated_confidences": self.calibrated_confidences,
            "statuses": _statuses(self.review),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "calibrator_version": self.calibrator_version,
            "decided_at_ms": self.decided_at_ms,
            "calibrator_versions": self.calibrator_versions,
            "segment_key": self.segment_key,
            "segments": self.segments,
            "shadow_calibrator_version": self.shadow_calibrator_version,
            "shadow_confidences": self.shadow_confidences,
            "shadow_statuses": None
            if self.shadow_review is None
            else _statuses(self.shadow_review),
        }

    @classmethod
    def from_record(cls, rec: Record) -> DecisionColumns:
        return cls(
            predictions=PredictionColumns.from_record(rec["predictions"]),
            calibrated_confidences=_floats(rec["calibrated_confidences"]),
            review=np.asarray([s == "review" for s in rec["statuses"]], dtype=np.bool_),
            threshold=rec["threshold"],
            threshold_source=rec["threshold_source"],
            calibrator_version=rec["calibrator_version"],
            decided_at_ms=rec["decided_at_ms"],
            calibrator_versions=rec.get("calibrator_versions"),
            segment_key=rec.get("segment_key"),
            segments=rec.get("segments"),
            shadow_calibrator_version=rec.get("shadow_calibrator_version"),
            shadow_confidences=None
            if rec.get("shadow_confidences") is None
            else _floats(rec["shadow_confidences"]),
            shadow_review=None
            if rec.get("shadow_statuses") is None
            else np.asarray([s == "review" for s in rec["shadow_statuses"]], dtype=np.bool_),
        )


@dataclass(slots=True)
class LabelColumns:
    """Labels, all of one model version (or all of unknown model when model_name is None)."""

    tenant: str
    model_name: str | None
    model_version: str | None
    event_ids: list[str]
    ground_truths: list[str]
    sources: list[str]
    label_time_ms: IntArray
    prediction_time_ms: IntArray | None = None
    """Event time of each labelled prediction when known (0 = unknown)."""

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def key(self) -> str | None:
        if self.model_name is None or self.model_version is None:
            return None
        return model_key(self.tenant, self.model_name, self.model_version)

    def take(self, rows: npt.ArrayLike) -> LabelColumns:
        idx = np.asarray(rows, dtype=np.int64)
        ids = idx.tolist()
        return replace(
            self,
            event_ids=[self.event_ids[i] for i in ids],
            ground_truths=[self.ground_truths[i] for i in ids],
            sources=[self.sources[i] for i in ids],
            label_time_ms=self.label_time_ms[idx],
            prediction_time_ms=None
            if self.prediction_time_ms is None
            else self.prediction_time_ms[idx],
        )

    def to_record(self) -> Record:
        """The ``LabelBatch`` record with every array a list (fastavro's shape)."""
        return _tolist(self.to_columnar_record(), ("label_time_ms", "prediction_time_ms"))

    def to_columnar_record(self) -> Record:
        """The ``LabelBatch`` record with numeric arrays as numpy arrays."""
        return {
            "tenant": self.tenant,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "event_ids": self.event_ids,
            "ground_truths": self.ground_truths,
            "sources": self.sources,
            "label_time_ms": self.label_time_ms,
            "prediction_time_ms": _NO_INTS
            if self.prediction_time_ms is None
            else self.prediction_time_ms,
        }

    @classmethod
    def from_record(cls, rec: Record) -> LabelColumns:
        pt = rec.get("prediction_time_ms")
        pt = pt if size_of(pt) else None
        return cls(
            tenant=rec["tenant"],
            model_name=rec.get("model_name"),
            model_version=rec.get("model_version"),
            event_ids=rec["event_ids"],
            ground_truths=rec["ground_truths"],
            sources=rec["sources"],
            label_time_ms=np.asarray(rec["label_time_ms"], dtype=np.int64),
            prediction_time_ms=None if pt is None else np.asarray(pt, dtype=np.int64),
        )
