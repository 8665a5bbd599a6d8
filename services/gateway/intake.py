"""Events posted over REST: records, the same validation as ingest, predicted decisions.

Everything here is plain and synchronous; the route resolves the model versions first and
publishes what :func:`prepare` returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.gateway.model_cache import ModelRef
from services.gateway.schemas import PredictionIn
from shared.contracts.batches import PredictionColumns, Record, model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.errors import ErrorCode, Fault
from shared.contracts.limits import DEFAULT_LIMITS, Limits, int64_fault, string_fault
from shared.contracts.validation import Rows, group_events, validate_columns
from shared.recalibration.segments import batch_segments
from shared.recalibration.serving import serve

REST_FIELD_NAMES = {"event_time_ms": "event_time"}
"""Record fields whose REST name differs."""


@dataclass(slots=True)
class Decided:
    """The decision the policy will take on one event (same rule, same calibration map)."""

    calibrated_confidence: float
    threshold: float
    review: bool

    @property
    def status(self) -> str:
        return "review" if self.review else "auto"


@dataclass(slots=True)
class Prepared:
    records: list[Record]
    """InferenceEvent records, in request order."""
    groups: list[Rows]
    """The same events as columns per model version; ``refs`` are request indices."""
    decisions: list[Decided]
    """Per event, in request order."""


def fault_detail(index: int | None, field: str | None, message: str, code: str) -> dict[str, Any]:
    """One entry of a 422 ``detail``, shaped like FastAPI's own (``loc``, ``msg``, ``type``)."""
    loc: list[Any] = ["body"] + (["events", index] if index is not None else [])
    field = REST_FIELD_NAMES.get(field or "", field)
    loc += (field or "event").split(".", 1)
    return {"loc": loc, "msg": message, "type": code}


def _epoch_ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)  # a time without zone is taken as UTC
    return int(t.timestamp() * 1000)


def to_record(e: PredictionIn, tenant: str, model: ModelRef, now_ms: int) -> Record:
    return {
        "event_id": str(e.event_id) if e.event_id is not None else str(uuid.uuid4()),
        "tenant": tenant,
        "model_name": model.name,
        "model_version": model.version,
        "model_version_id": model.id,
        "event_time_ms": _epoch_ms(e.event_time) if e.event_time is not None else now_ms,
        "predicted_label": e.predicted_label,
        "confidence": e.confidence,
        "probabilities": e.probabilities,
        "logits": e.logits,
        "features": e.features,
        "ground_truth": e.ground_truth,
        "uncertainty": e.uncertainty,
        "metadata": e.metadata or {},
    }


def identity_fault(e: PredictionIn, limits: Limits = DEFAULT_LIMITS) -> Fault | None:
    """Why the event's model cannot even be looked up (a string PostgreSQL cannot take, an
    id beyond int64); None when it can."""
    fault = int64_fault("model_version_id", e.model_version_id)
    for name in ("model_name", "model_version"):
        fault = fault or string_fault(name, getattr(e, name), limits.max_string, required=False)
    return fault


def unknown_model_detail(
    e: PredictionIn, index: int | None, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    fault = identity_fault(e, limits)
    if fault is not None:
        return fault_detail(index, fault.field, fault.message, fault.code)
    if e.model_version_id is not None:
        return fault_detail(
            index,
            "model_version_id",
            f"model_version_id {e.model_version_id} is not a registered model version of "
            "this tenant",
            ErrorCode.MISSING_MODEL,
        )
    if e.model_name and e.model_version:
        return fault_detail(
            index,
            "model_name",
            f"model {e.model_name!r} version {e.model_version!r} is not registered for this "
            "tenant (register it with POST /api/models)",
            ErrorCode.MISSING_MODEL,
        )
    return fault_detail(
        index,
        "model_version_id",
        "model_version_id is required (or model_name and model_version)",
        ErrorCode.MISSING_MODEL,
    )


def prepare(
    events: Sequence[PredictionIn],
    tenant: str,
    models: Sequence[ModelRef | None],
    now_ms: int,
    batch: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> Prepared | list[dict[str, Any]]:
    """The events as records, columns and decisions, or the 422 details of every fault.

    ``models[i]`` is the resolved model version of ``events[i]`` (None: unknown). The
    checks are ingest's (:mod:`shared.contracts.validation` with the same limits), so what REST
    accepts, the Kafka path would accept too.
    """
    where = (lambda i: i) if batch else (lambda i: None)
    details: list[tuple[int, dict[str, Any]]] = []
    if len(events) > limits.max_request_events:
        return [
            fault_detail(
                None,
                "events",
                f"{len(events)} events in one request; at most {limits.max_request_events}",
                ErrorCode.TOO_LARGE,
            )
        ]
    records: list[Record] = []
    refs: list[int] = []
    for i, (e, m) in enumerate(zip(events, models, strict=True)):
        if m is None:
            details.append((i, unknown_model_detail(e, where(i), limits)))
        else:
            records.append(to_record(e, tenant, m, now_ms))
            refs.append(i)
    groups, faults = group_events(zip(refs, records, strict=True), limits, now_ms)
    details += [(ref, fault_detail(where(ref), f.field, f.message, f.code)) for ref, f in faults]
    for g in groups:
        _, col_faults = validate_columns(g.columns, limits)
        details += [
            (g.refs[row], fault_detail(where(g.refs[row]), f.field, f.message, f.code))
            for row, f in col_faults
        ]
    if details:
        details.sort(key=lambda d: d[0])
        return [d for _, d in details]
    decisions: list[Decided | None] = [None] * len(events)
    for g in groups:
        model = models[g.refs[0]]
        assert model is not None
        for ref, d in zip(g.refs, decide(g.columns, model), strict=True):
            decisions[ref] = d
    return Prepared(records, groups, [d for d in decisions if d is not None])


def decide(cols: PredictionColumns, model: ModelRef) -> list[Decided]:
    """The policy's rule, by the policy's own serve-time choice (segment maps, candidate and
    canary arm included): calibrated confidence >= threshold is auto, below is review."""
    segments = batch_segments(model.segment_key, cols)
    served = serve(
        model.plan(),
        cols.event_ids,
        cols.confidences,
        cols.probabilities,
        cols.logits,
        cols.class_labels,
        segments,
    )
    t = float(model.abstain_threshold)
    return [
        Decided(c, t, r)
        for c, r in zip(served.confidences.tolist(), served.review.tolist(), strict=True)
    ]


def batch_messages(
    prepared: Prepared, codec: AvroCodec, max_events: int
) -> list[tuple[bytes, bytes]]:
    """(key, value) PredictionBatch messages: per model version, up to ``max_events`` each."""
    out = []
    for g in prepared.groups:
        cols = g.columns
        key = cols.key.encode()
        for start in range(0, len(cols), max_events):
            part = (
                cols
                if len(cols) <= max_events
                else cols.take(np.arange(start, min(start + max_events, len(cols))))
            )
            out.append((key, codec.encode("PredictionBatch", part.to_columnar_record())))
    return out


def event_message(record: Record, codec: AvroCodec) -> tuple[bytes, bytes]:
    """(key, value) of one InferenceEvent message."""
    key = model_key(record["tenant"], record["model_name"], record["model_version"]).encode()
    return key, codec.encode("InferenceEvent", record)
