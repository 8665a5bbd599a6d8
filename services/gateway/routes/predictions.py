"""Predictions over REST: the same validation as ingest, published to inference.raw."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse

from services.gateway.auth import PRODUCE, READ, Principal, require
from services.gateway.intake import (
    Prepared,
    batch_messages,
    event_message,
    identity_fault,
    prepare,
)
from services.gateway.model_cache import ModelCache, ModelRef
from services.gateway.ratelimit import retry_after
from services.gateway.schemas import (
    INT64_MAX,
    INT64_MIN,
    BatchAccepted,
    PredictionAccepted,
    PredictionBatchIn,
    PredictionIn,
    PredictionOut,
)
from services.gateway.state import state_of
from shared.contracts.limits import Limits
from shared.runtime import clock

router = APIRouter(prefix="/api", tags=["predictions"])

_503 = {"description": "Kafka did not acknowledge the events; nothing was accepted"}


async def _resolve(
    cache: ModelCache, tenant: str, events: Sequence[PredictionIn], limits: Limits
) -> list[ModelRef | None]:
    """Each event's model version (None: unknown to this tenant), one lookup per model."""
    seen: dict[tuple[Any, ...], ModelRef | None] = {}
    out: list[ModelRef | None] = []
    for e in events:
        if identity_fault(e, limits) is not None:
            out.append(None)  # never sent to PostgreSQL; prepare() names the fault
            continue
        if e.model_version_id is not None:
            ident: tuple[Any, ...] = ("id", e.model_version_id)
        elif e.model_name and e.model_version:
            ident = ("name", e.model_name, e.model_version)
        else:
            out.append(None)
            continue
        if ident not in seen:
            seen[ident] = (
                await cache.by_id(tenant, ident[1])
                if ident[0] == "id"
                else await cache.by_name(tenant, ident[1], ident[2])
            )
        out.append(seen[ident])
    return out


async def _accept(
    request: Request, who: Principal, events: Sequence[PredictionIn], batch: bool
) -> Prepared:
    state = state_of(request)
    wait = await state.event_rate.take(who.key_id, len(events), state.route_redis)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"{len(events)} events exceed this API key's event rate "
            "(CALIBER_GATEWAY_RATE_EVENTS_PER_SECOND); retry after the given seconds",
            headers={"Retry-After": retry_after(wait)},
        )
    now_ms = clock.now_ms()
    limits = Limits.from_settings(state.settings)
    models = await _resolve(state.models, who.tenant, events, limits)
    prepared = prepare(events, who.tenant, models, now_ms, batch, limits)
    if not isinstance(prepared, Prepared):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=prepared)
    if batch:
        messages = batch_messages(prepared, state.codec, state.settings.batch_max_events)
    else:
        messages = [event_message(prepared.records[0], state.codec)]
    topic = state.topics.inference_raw
    try:
        await state.publisher.send([(topic, k, v) for k, v in messages])
    except KafkaException as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Kafka did not acknowledge the events, none was accepted: {exc}",
        ) from exc
    state.metrics.events_accepted.inc(len(prepared.records))
    return prepared


@router.post(
    "/predictions",
    response_model=PredictionAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: _503},
)
async def post_prediction(
    body: PredictionIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> PredictionAccepted:
    """Validate one event, publish it, and answer with the decision the policy will take.

    The decision uses the model version's abstain threshold and calibration map: calibrated
    confidence at or above the threshold is ``auto``, below it ``review``.
    """
    prepared = await _accept(request, who, [body], batch=False)
    r, d = prepared.records[0], prepared.decisions[0]
    return PredictionAccepted(
        id=r["event_id"],
        event_id=r["event_id"],
        model_version_id=r["model_version_id"],
        model_name=r["model_name"],
        model_version=r["model_version"],
        predicted_label=r["predicted_label"],
        confidence=r["confidence"],
        calibrated_confidence=d.calibrated_confidence,
        threshold=d.threshold,
        status=d.status,  # type: ignore[arg-type]
        uncertainty=r["uncertainty"],
        ground_truth=r["ground_truth"],
        correct=None if r["ground_truth"] is None else r["ground_truth"] == r["predicted_label"],
        event_time=datetime.fromtimestamp(r["event_time_ms"] / 1000, tz=UTC),
        created_at=datetime.now(tz=UTC),
    )


@router.post(
    "/predictions/batch",
    response_model=BatchAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: _503},
)
async def post_batch(
    body: PredictionBatchIn, request: Request, who: Annotated[Principal, Depends(require(PRODUCE))]
) -> JSONResponse:
    """Many events in one request, published as columnar batches: all of them or none.

    Semantics: the request is one verdict. If any event breaks a limit or a rule, the whole
    request is refused with 422 *before anything is published*, so none of its events is
    accepted (the good ones are not lost: resend them without the faulty ones); a 202 means
    every event was accepted and will be recorded. A 422 names the faulty events (the first
    50; ``omitted`` counts the rest), each ``loc`` holding the event's index and its ``type``
    the stable error code.
    """
    most = state_of(request).settings.gateway_max_request_events
    if len(body.events) > most:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail=[
                {
                    "loc": ["body", "events"],
                    "msg": f"{len(body.events)} events in one request; at most {most} allowed "
                    "(CALIBER_GATEWAY_MAX_REQUEST_EVENTS)",
                    "type": "too_large",
                }
            ],
        )
    prepared = await _accept(request, who, body.events, batch=True)
    predictions = [
        {
            "event_id": r["event_id"],
            "model_version_id": r["model_version_id"],
            "status": d.status,
            "calibrated_confidence": d.calibrated_confidence,
            "threshold": d.threshold,
        }
        for r, d in zip(prepared.records, prepared.decisions, strict=True)
    ]
    # Built by hand: validating hundreds of answers against the response model costs more
    # than the rest of the request; the model still documents the shape.
    return JSONResponse(
        {"accepted": len(predictions), "predictions": predictions},
        status_code=status.HTTP_202_ACCEPTED,
    )


PREDICTION_COLUMNS = (
    "event_id::text AS event_id, model_version_id, model_name, model_version, predicted_label, "
    "confidence, calibrated_confidence, threshold, uncertainty, ground_truth, correct, "
    "label_source, status, probabilities::text AS probabilities, features::text AS features, "
    "event_time, created_at, resolved_at, decision, review_state, resolved_by, reviewer_key_id"
)


def of_model(param: str) -> str:
    """SQL: the row (of tenant ``$1``) belongs to the registered model version whose id is
    ``param``, matched by its name and version: the index on (tenant, name, version, time)
    serves it, and rows recorded before the version was registered (their
    ``model_version_id`` is NULL) are found too."""
    return (
        "(model_name, model_version) = (SELECT m.name, m.version FROM model_versions m "
        f"WHERE m.id = {param} AND m.tenant_id = $1)"
    )


def prediction_out(r: Any) -> PredictionOut:
    return PredictionOut(
        id=r["event_id"],
        event_id=r["event_id"],
        model_version_id=r["model_version_id"],
        model_name=r["model_name"],
        model_version=r["model_version"],
        predicted_label=r["predicted_label"],
        confidence=r["confidence"],
        calibrated_confidence=r["calibrated_confidence"],
        threshold=r["threshold"],
        uncertainty=r["uncertainty"],
        ground_truth=r["ground_truth"],
        correct=r["correct"],
        label_source=r["label_source"],
        status=r["status"],
        probabilities=json.loads(r["probabilities"]) if r["probabilities"] else None,
        features=json.loads(r["features"]) if r["features"] else None,
        event_time=r["event_time"],
        created_at=r["created_at"],
        resolved_at=r["resolved_at"],
        decision=r["decision"],
        review_state=r["review_state"],
        resolved_by=r["resolved_by"],
        reviewer_key_id=r["reviewer_key_id"],
    )


@router.get("/predictions", response_model=list[PredictionOut])
async def list_predictions(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX)] = None,
    status_: Annotated[
        Literal["pending", "auto", "review", "resolved"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[PredictionOut]:
    """Recorded predictions of this tenant, newest first; filter by model and status."""
    model = "$2::bigint IS NULL" if model_version_id is None else of_model("$2::bigint")
    rows = await state_of(request).pool.fetch(
        f"SELECT {PREDICTION_COLUMNS} FROM predictions WHERE tenant_id = $1 "
        f"AND {model} AND ($3::text IS NULL OR status = $3) "
        "ORDER BY event_time DESC, event_id LIMIT $4 OFFSET $5",
        who.tenant,
        model_version_id,
        status_,
        limit,
        offset,
    )
    return [prediction_out(r) for r in rows]
