"""The review queue and its resolutions; a resolution reaches labels.raw via the outbox."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from services.gateway.auth import READ, REVIEW, Principal, require
from services.gateway.outbox import enqueue
from services.gateway.routes.predictions import PREDICTION_COLUMNS, of_model, prediction_out
from services.gateway.schemas import (
    INT64_MAX,
    OptionalQueryId,
    PredictionOut,
    ResolutionIn,
    ResolutionOut,
)
from services.gateway.state import state_of
from shared.contracts.batches import model_key

router = APIRouter(prefix="/api", tags=["review"])


_UNRESOLVED = (
    "NOT EXISTS (SELECT 1 FROM review_resolutions r "
    "WHERE r.tenant_id = p.tenant_id AND r.event_id = p.event_id)"
)
"""Not resolved through the review endpoint yet (event ids are unique within a tenant)."""


@router.get("/review-queue", response_model=list[PredictionOut])
async def review_queue(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: OptionalQueryId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[PredictionOut]:
    """Withheld predictions awaiting a human, oldest first.

    A prediction leaves the queue as soon as it is resolved here, before its label has
    travelled through the pipeline back into the prediction.
    """
    model = "$2::bigint IS NULL" if model_version_id is None else of_model("$2::bigint")
    rows = await state_of(request).pool.fetch(
        f"SELECT {PREDICTION_COLUMNS} FROM predictions p WHERE tenant_id = $1 "
        f"AND status = 'review' AND {model} AND {_UNRESOLVED} "
        "ORDER BY event_time, event_id LIMIT $3 OFFSET $4",
        who.tenant,
        model_version_id,
        limit,
        offset,
    )
    return [prediction_out(r) for r in rows]


async def queue_depth(pool: asyncpg.Pool) -> int:
    """Unresolved withheld predictions, every tenant's together."""
    n = await pool.fetchval(
        f"SELECT count(*) FROM predictions p WHERE status = 'review' AND {_UNRESOLVED}"
    )
    return int(n or 0)


def _not_found(event_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"prediction {event_id} not found")


def _already(event_id: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT, detail=f"prediction {event_id} is already resolved"
    )


@router.post(
    "/review/{event_id}",
    response_model=ResolutionOut,
    responses={404: {"description": "no such prediction"}, 409: {"description": "resolved"}},
)
async def resolve(
    event_id: str,
    body: ResolutionIn,
    request: Request,
    who: Annotated[Principal, Depends(require(REVIEW))],
) -> ResolutionOut:
    """Resolve a prediction with its ground truth: 404 unknown, 409 already resolved.

    The resolution and the Label for ``<ns>.labels.raw`` are written in one transaction;
    the outbox relay publishes the label, and the pipeline brings it back into the
    prediction and the metrics.
    """
    try:
        eid = uuid.UUID(event_id)
    except ValueError:
        raise _not_found(event_id) from None
    state = state_of(request)
    async with state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT event_id::text AS event_id, model_version_id, model_name, model_version, "
            "predicted_label, confidence, status, review_state, ground_truth FROM predictions "
            "WHERE event_id = $1 AND tenant_id = $2",
            eid,
            who.tenant,
        )
        if row is None:
            raise _not_found(event_id)
        if row["review_state"] == "resolved" or row["ground_truth"] is not None:
            raise _already(row["event_id"])
        resolved_at = await conn.fetchval(
            "INSERT INTO review_resolutions (event_id, tenant_id, ground_truth, api_key_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, event_id) DO NOTHING "
            "RETURNING resolved_at",
            eid,
            who.tenant,
            body.ground_truth,
            who.key_id,
        )
        if resolved_at is None:
            raise _already(row["event_id"])
        label = {
            "event_id": row["event_id"],
            "tenant": who.tenant,
            "model_name": row["model_name"],
            "model_version": row["model_version"],
            "ground_truth": body.ground_truth,
            "source": "review",
            "label_time_ms": int(resolved_at.timestamp()) * 1000 + resolved_at.microsecond // 1000,
        }
        key = model_key(who.tenant, row["model_name"], row["model_version"])
        await enqueue(
            conn, state.topics.labels_raw, key.encode(), state.codec.encode("Label", label)
        )
    state.metrics.reviews_resolved.inc()
    out = ResolutionOut(
        id=row["event_id"],
        event_id=row["event_id"],
        model_version_id=row["model_version_id"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        predicted_label=row["predicted_label"],
        confidence=row["confidence"],
        ground_truth=body.ground_truth,
        correct=body.ground_truth == row["predicted_label"],
        status="resolved",
        resolved_at=resolved_at,
    )
    event: dict[str, Any] = {"type": "review", "model": key, **out.model_dump(mode="json")}
    state.hub.publish(who.tenant, row["model_version_id"], [event])
    return out
