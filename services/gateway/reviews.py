"""The review queue and its resolutions; a resolution reaches labels.raw via the outbox."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import READ, REVIEW, Principal, require
from services.gateway.outbox import enqueue
from services.gateway.predictions import PREDICTION_COLUMNS, PredictionOut, prediction_out
from shared.batches import model_key

router = APIRouter(prefix="/api", tags=["review"])


class Resolution(BaseModel):
    ground_truth: str = Field(min_length=1, max_length=256)


class Resolved(BaseModel):
    id: str
    event_id: str
    ground_truth: str
    correct: bool
    status: str
    resolved_at: str


@router.get("/review-queue", response_model=list[PredictionOut])
async def review_queue(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    model_version_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[PredictionOut]:
    """Withheld predictions awaiting a human, oldest first."""
    rows = await request.app.state.pool.fetch(
        f"SELECT {PREDICTION_COLUMNS} FROM predictions p WHERE tenant_id = $1 "
        "AND status = 'review' AND ($2::bigint IS NULL OR model_version_id = $2) "
        "AND NOT EXISTS (SELECT 1 FROM review_resolutions r WHERE r.event_id = p.event_id) "
        "ORDER BY event_time, event_id LIMIT $3 OFFSET $4",
        who.tenant,
        model_version_id,
        limit,
        offset,
    )
    return [prediction_out(r) for r in rows]


@router.post("/review/{event_id}", response_model=Resolved)
async def resolve(
    event_id: uuid.UUID,
    body: Resolution,
    request: Request,
    who: Annotated[Principal, Depends(require(REVIEW))],
) -> Resolved:
    """Resolve a withheld prediction with its ground truth (404 unknown, 409 already resolved)."""
    state = request.app.state
    async with state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT event_id::text AS event_id, model_name, model_version, predicted_label, "
            "status FROM predictions WHERE event_id = $1 AND tenant_id = $2 FOR UPDATE",
            event_id,
            who.tenant,
        )
        if row is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"prediction {event_id} not found"
            )
        if row["status"] != "review":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"prediction {event_id} is not awaiting review (status {row['status']})",
            )
        resolved_at = await conn.fetchval(
            "INSERT INTO review_resolutions (event_id, tenant_id, ground_truth, api_key_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING RETURNING resolved_at",
            event_id,
            who.tenant,
            body.ground_truth,
            who.key_id,
        )
        if resolved_at is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"prediction {event_id} is already resolved"
            )
        label = {
            "event_id": str(event_id),
            "tenant": who.tenant,
            "model_name": row["model_name"],
            "model_version": row["model_version"],
            "ground_truth": body.ground_truth,
            "source": "review",
            "label_time_ms": int(time.time() * 1000),
        }
        await enqueue(
            conn,
            state.topics.labels_raw,
            model_key(who.tenant, row["model_name"], row["model_version"]).encode(),
            state.codec.encode("Label", label),
        )
    correct = body.ground_truth == row["predicted_label"]
    state.hub.publish(
        who.tenant,
        None,
        {
            "type": "review",
            "event_id": str(event_id),
            "ground_truth": body.ground_truth,
            "correct": correct,
        },
    )
    return Resolved(
        id=str(event_id),
        event_id=str(event_id),
        ground_truth=body.ground_truth,
        correct=correct,
        status="resolved",
        resolved_at=resolved_at.isoformat(),
    )
