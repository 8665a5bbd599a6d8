"""Predictions over REST: the same validation as ingest, published to inference.raw."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import PRODUCE, READ, Principal, require
from shared.batches import PredictionColumns, model_key
from shared.validation import DEFAULT_LIMITS, group_events, validate_columns

router = APIRouter(prefix="/api", tags=["predictions"])
DEFAULT_THRESHOLD = 0.7


class PredictionIn(BaseModel):
    """One inference event. Name the model by ``model_version_id`` or name + version."""

    event_id: uuid.UUID | None = None
    model_version_id: int | None = None
    model_name: str | None = None
    model_version: str | None = None
    event_time: datetime | None = None
    predicted_label: str
    confidence: float
    probabilities: dict[str, float] | None = None
    logits: dict[str, float] | None = None
    features: dict[str, float | str] | None = None
    ground_truth: str | None = None
    uncertainty: float | None = None
    metadata: dict[str, str] | None = None


class PredictionBatchIn(BaseModel):
    events: list[PredictionIn] = Field(min_length=1, max_length=DEFAULT_LIMITS.max_batch_events)


class Accepted(BaseModel):
    event_id: str
    model_version_id: int | None
    status: Literal["auto", "review"]
    """The decision the policy will take (identity calibration)."""
    threshold: float


class BatchAccepted(BaseModel):
    accepted: int
    predictions: list[Accepted]


class PredictionOut(BaseModel):
    id: str
    event_id: str
    model_version_id: int | None
    model_name: str
    model_version: str
    predicted_label: str
    confidence: float
    calibrated_confidence: float | None
    uncertainty: float | None
    ground_truth: str | None
    correct: bool | None
    status: str
    probabilities: dict[str, float] | None
    features: dict[str, Any] | None
    event_time: str
    created_at: str


def _unprocessable(index: int | None, field: str, message: str, code: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[_fault_detail(index, field, message, code)]
    )


def _fault_detail(index: int | None, field: str | None, message: str, code: str) -> dict[str, Any]:
    loc: list[Any] = ["body"] + (["events", index] if index is not None else [])
    loc += (field or "event").split(".")
    return {"loc": loc, "msg": message, "type": code}


async def _resolve(
    request: Request, who: Principal, event: PredictionIn, index: int | None
) -> tuple[str, str, int | None, float]:
    """(model name, version, registry id, threshold) of an event's model."""
    cache = request.app.state.models
    if event.model_version_id is not None:
        row = await cache.by_id(who.tenant, event.model_version_id)
        if row is None:
            raise _unprocessable(
                index,
                "model_version_id",
                f"model_version_id {event.model_version_id} is not a registered model version "
                "of this tenant",
                "unknown_model",
            )
        return row["name"], row["version"], row["id"], row["abstain_threshold"]
    if not event.model_name or not event.model_version:
        raise _unprocessable(
            index,
            "model_version_id",
            "give model_version_id, or model_name and model_version",
            "missing_model",
        )
    row = await cache.by_name(who.tenant, event.model_name, event.model_version)
    if row is None:
        return event.model_name, event.model_version, None, DEFAULT_THRESHOLD
    return row["name"], row["version"], row["id"], row["abstain_threshold"]


async def _accept(
    request: Request, who: Principal, events: list[PredictionIn], batch: bool
) -> list[Accepted]:
    now_ms = int(time.time() * 1000)
    records: list[dict[str, Any]] = []
    thresholds: list[float] = []
    for i, e in enumerate(events):
        name, version, model_id, threshold = await _resolve(request, who, e, i if batch else None)
        thresholds.append(threshold)
        records.append(
            {
                "event_id": str(e.event_id or uuid.uuid4()),
                "tenant": who.tenant,
                "model_name": name,
                "model_version": version,
                "model_version_id": model_id,
                "event_time_ms": int(e.event_time.timestamp() * 1000) if e.event_time else now_ms,
                "predicted_label": e.predicted_label,
                "confidence": e.confidence,
                "probabilities": e.probabilities,
                "logits": e.logits,
                "features": e.features,
                "ground_truth": e.ground_truth,
                "uncertainty": e.uncertainty,
                "metadata": e.metadata or {},
            }
        )
    groups, faults = group_events(enumerate(records))
    details = [
        _fault_detail(ref if batch else None, f.field, f.message, str(f.code)) for ref, f in faults
    ]
    for g in groups:
        _, col_faults = validate_columns(g.columns)
        details += [
            _fault_detail(g.refs[row] if batch else None, f.field, f.message, str(f.code))
            for row, f in col_faults
        ]
    if details:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=details)
    state = request.app.state
    topic = state.topics.inference_raw
    if batch:
        messages = [
            (
                topic,
                g.columns.key.encode(),
                state.codec.encode("PredictionBatch", _with_ids(g.columns, records, g.refs)),
            )
            for g in groups
        ]
    else:
        r = records[0]
        messages = [
            (
                topic,
                model_key(r["tenant"], r["model_name"], r["model_version"]).encode(),
                state.codec.encode("InferenceEvent", r),
            )
        ]
    await state.publisher.send(messages)
    return [
        Accepted(
            event_id=r["event_id"],
            model_version_id=r["model_version_id"],
            status="review" if r["confidence"] < t else "auto",
            threshold=t,
        )
        for r, t in zip(records, thresholds, strict=True)
    ]


def _with_ids(
    cols: PredictionColumns, records: list[dict[str, Any]], refs: list[int]
) -> dict[str, Any]:
    cols.model_version_id = records[refs[0]]["model_version_id"]
    return cols.to_record()


@router.post("/predictions", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED)
async def post_prediction(
    body: PredictionIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> Accepted:
    """Validate one event, publish it, and answer with the decision the policy will take."""
    return (await _accept(request, who, [body], batch=False))[0]


@router.post(
    "/predictions/batch", response_model=BatchAccepted, status_code=status.HTTP_202_ACCEPTED
)
async def post_batch(
    body: PredictionBatchIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> BatchAccepted:
    """Many events in one request, published as columnar batches (all or none)."""
    accepted = await _accept(request, who, body.events, batch=True)
    return BatchAccepted(accepted=len(accepted), predictions=accepted)


@router.get("/predictions", response_model=list[PredictionOut])
async def list_predictions(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: int | None = None,
    status_: Annotated[Literal["auto", "review", "resolved"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[PredictionOut]:
    rows = await request.app.state.pool.fetch(
        f"SELECT {PREDICTION_COLUMNS} FROM predictions WHERE tenant_id = $1 "
        "AND ($2::bigint IS NULL OR model_version_id = $2) AND ($3::text IS NULL OR status = $3) "
        "ORDER BY event_time DESC, event_id LIMIT $4 OFFSET $5",
        who.tenant,
        model_version_id,
        status_,
        limit,
        offset,
    )
    return [prediction_out(r) for r in rows]


PREDICTION_COLUMNS = (
    "event_id::text AS event_id, model_version_id, model_name, model_version, predicted_label, "
    "confidence, calibrated_confidence, uncertainty, ground_truth, correct, status, "
    "probabilities::text AS probabilities, features::text AS features, event_time, created_at"
)


def prediction_out(r: Any) -> PredictionOut:
    import json

    return PredictionOut(
        id=r["event_id"],
        event_id=r["event_id"],
        model_version_id=r["model_version_id"],
        model_name=r["model_name"],
        model_version=r["model_version"],
        predicted_label=r["predicted_label"],
        confidence=r["confidence"],
        calibrated_confidence=r["calibrated_confidence"],
        uncertainty=r["uncertainty"],
        ground_truth=r["ground_truth"],
        correct=r["correct"],
        status=r["status"],
        probabilities=json.loads(r["probabilities"]) if r["probabilities"] else None,
        features=json.loads(r["features"]) if r["features"] else None,
        event_time=r["event_time"].isoformat(),
        created_at=r["created_at"].isoformat(),
    )
