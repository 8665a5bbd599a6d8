"""What a client sends: one prediction (:class:`Event`) or one label (:class:`LabelEvent`),
and how a group of them becomes a columnar batch record (``PredictionBatch``,
``LabelBatch``) or a REST body."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROUTE_DECISION = "caliber.route_decision"
"""Metadata key that links a prediction to a routing decision (its label is the outcome)."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Event:
    """One prediction of one model version.

    ``event_id`` is the idempotency key: sending the same event again (a retry) counts once.
    """

    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    event_id: str = field(default_factory=new_event_id)
    event_time_ms: int = field(default_factory=now_ms)
    probabilities: Mapping[str, float] | None = None
    features: Mapping[str, float | str] | None = None
    ground_truth: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def shape(self) -> tuple[Any, ...]:
        """Events of one shape share a batch: model version, classes, feature kinds."""
        classes = None if self.probabilities is None else tuple(sorted(self.probabilities))
        kinds = tuple(sorted((k, isinstance(v, str)) for k, v in (self.features or {}).items()))
        return (self.model_name, self.model_version, classes, kinds)

    def rest_body(self) -> dict[str, Any]:
        """The event as ``POST /api/predictions/batch`` takes it."""
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "predicted_label": self.predicted_label,
            "confidence": self.confidence,
            "event_time": datetime.fromtimestamp(self.event_time_ms / 1000, tz=UTC).isoformat(),
        }
        if self.probabilities is not None:
            body["probabilities"] = dict(self.probabilities)
        if self.features:
            body["features"] = dict(self.features)
        if self.ground_truth is not None:
            body["ground_truth"] = self.ground_truth
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """The ground truth of an earlier prediction, by its event id."""

    event_id: str
    ground_truth: str
    model_name: str | None = None
    model_version: str | None = None
    label_time_ms: int = field(default_factory=now_ms)

    def shape(self) -> tuple[Any, ...]:
        return ("label", self.model_name, self.model_version)

    def rest_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "ground_truth": self.ground_truth,
            "label_time": datetime.fromtimestamp(self.label_time_ms / 1000, tz=UTC).isoformat(),
        }
        if self.model_name is not None and self.model_version is not None:
            body["model_name"] = self.model_name
            body["model_version"] = self.model_version
        return body


def prediction_batch(tenant: str, events: Sequence[Event]) -> dict[str, Any]:
    """A ``PredictionBatch`` record of events of one shape (see :meth:`Event.shape`)."""
    first = events[0]
    classes = sorted(first.probabilities) if first.probabilities is not None else []
    numeric: dict[str, list[float]] = {}
    categorical: dict[str, list[str]] = {}
    for name, value in (first.features or {}).items():
        if isinstance(value, str):
            categorical[name] = []
        else:
            numeric[name] = []
    probabilities: list[float] = []
    for e in events:
        feats = e.features or {}
        for name, column in numeric.items():
            column.append(float(feats[name]))
        for name, cat in categorical.items():
            cat.append(str(feats[name]))
        if e.probabilities is not None:
            probabilities.extend(float(e.probabilities[c]) for c in classes)
    truths = [e.ground_truth for e in events]
    metadata = [dict(e.metadata) for e in events]
    return {
        "tenant": tenant,
        "model_name": first.model_name,
        "model_version": first.model_version,
        "model_version_id": None,
        "event_ids": [e.event_id for e in events],
        "event_time_ms": [e.event_time_ms for e in events],
        "predicted_labels": [e.predicted_label for e in events],
        "confidences": [float(e.confidence) for e in events],
        "class_labels": classes,
        "probabilities": probabilities,
        "logits": [],
        "numeric_features": numeric,
        "categorical_features": categorical,
        "ground_truths": truths if any(t is not None for t in truths) else [],
        "uncertainties": [],
        "metadata": metadata if any(metadata) else [],
    }


def label_batch(tenant: str, labels: Sequence[LabelEvent]) -> dict[str, Any]:
    """A ``LabelBatch`` record of labels of one model version (or of unnamed models)."""
    first = labels[0]
    named = first.model_name is not None and first.model_version is not None
    return {
        "tenant": tenant,
        "model_name": first.model_name if named else None,
        "model_version": first.model_version if named else None,
        "event_ids": [lab.event_id for lab in labels],
        "ground_truths": [lab.ground_truth for lab in labels],
        "sources": ["feed"] * len(labels),
        "label_time_ms": [lab.label_time_ms for lab in labels],
        "prediction_time_ms": [],
    }
