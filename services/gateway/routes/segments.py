"""Per-segment recalibration: an admin names the segment key of a model version, and a
reader fetches the version's segment maps.

The key must be a feature or a metadata key of the version's events. The gateway knows a
version's keys from two places it already reads: the features and metadata of its most
recent recorded predictions (the last ``RECENT_PREDICTIONS``, by event time) and the
features of its drift reference profile. A key seen in neither is refused with a 422
naming ``segment_key``; so is any key while the version has no recorded event and no
reference yet. The change is a registry change: it reaches the policy and the aggregator's
refits through the outbox and ``<ns>.model-updates``.

The segment maps are those the gateway follows from ``<ns>.segment-maps`` exactly as the
policy does (``SegmentMapView``, bounded by the same per-version cap), so a client applying
them in its own process decides as the policy does.
"""

from __future__ import annotations

import json
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import Field

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.routes.registry import _owned, _publish, to_out
from services.gateway.schemas import (
    ModelVersionOut,
    PathId,
    SegmentMapOut,
    SegmentMapsOut,
    StrictIn,
)
from services.gateway.state import state_of
from shared.contracts.validation import DEFAULT_LIMITS
from shared.registry.events import REGISTRY_COLUMNS

router = APIRouter(prefix="/api/models", tags=["registry"])

RECENT_PREDICTIONS = 1000

_KNOWN_KEYS = """
WITH recent AS (
    SELECT features, metadata FROM predictions
    WHERE tenant_id = $1 AND model_name = $2 AND model_version = $3
    ORDER BY event_time DESC LIMIT $5
)
SELECT
    EXISTS (SELECT 1 FROM recent WHERE features ? $4 OR metadata ? $4) AS seen,
    EXISTS (SELECT 1 FROM recent) AS any_event,
    EXISTS (
        SELECT 1 FROM (
            SELECT profile FROM drift_references WHERE model_version_id = $6
            ORDER BY id DESC LIMIT 1
        ) r WHERE r.profile -> 'features' ? $4
    ) AS in_reference
"""


class SegmentsIn(StrictIn):
    segment_key: str | None = Field(
        min_length=1,
        max_length=DEFAULT_LIMITS.max_string,
        pattern=r"^[^\x00-\x1f\x7f=]+$",
        description="a feature or metadata key of the version's events (no '=' or control "
        "characters); null = no segments",
    )


def _refuse(msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        detail=[{"loc": ["body", "segment_key"], "msg": msg, "type": "unknown_segment_key"}],
    )


async def _check_key(conn: asyncpg.Connection, row: asyncpg.Record, key: str) -> None:
    found = await conn.fetchrow(
        _KNOWN_KEYS,
        row["tenant_id"],
        row["name"],
        row["version"],
        key,
        RECENT_PREDICTIONS,
        row["id"],
    )
    if found["seen"] or found["in_reference"]:
        return
    if not found["any_event"]:
        raise _refuse(
            f"segment_key {key!r} cannot be checked: model version {row['id']} has no "
            "recorded event and no drift reference yet; expected a feature or metadata key "
            "of its events"
        )
    raise _refuse(
        f"segment_key {key!r} is neither a feature nor a metadata key of model version "
        f"{row['id']} (none of its last {RECENT_PREDICTIONS} events nor its drift reference "
        "has it)"
    )


@router.put(
    "/{model_id}/segments",
    response_model=ModelVersionOut,
    responses={404: {"description": "no such model version in this tenant"}},
)
async def set_segment_key(
    model_id: PathId,
    body: SegmentsIn,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> ModelVersionOut:
    """Name the segment key of a version (admin): each of its values gets a calibrator of
    its own, refitted as labels arrive; null turns per-segment calibration off."""
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        current = await _owned(conn, who.tenant, model_id, lock=True)
        if body.segment_key is not None:
            await _check_key(conn, current, body.segment_key)
        row = await conn.fetchrow(
            "UPDATE model_versions SET segment_key = $1, updated_at = now() WHERE id = $2 "
            f"RETURNING {REGISTRY_COLUMNS}",
            body.segment_key,
            model_id,
        )
        await _publish(request, conn, row)
    state_of(request).models.forget()
    return to_out(row)


@router.get(
    "/{model_id}/segment-maps",
    response_model=SegmentMapsOut,
    responses={404: {"description": "no such model version in this tenant"}},
)
async def segment_maps(
    model_id: PathId, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> SegmentMapsOut:
    """The version's segment key and the map of each of its segments that has one, as the
    policy applies them (artifact, then clipped to [clip_low, clip_high])."""
    state = state_of(request)
    ref = await state.models.by_id(who.tenant, model_id)
    if ref is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"model version {model_id} not found")
    entries = (
        {} if ref.segment_key is None else state.segment_maps.entries_for(ref.key, ref.segment_key)
    )
    return SegmentMapsOut(
        model_version_id=ref.id,
        segment_key=ref.segment_key,
        segment_maps=[
            SegmentMapOut(
                segment=e.segment,
                calibrator_version=e.calibrator_version,
                artifact=json.loads(e.calibrator),
                clip_low=e.clip_low,
                clip_high=e.clip_high,
            )
            for e in entries.values()
        ],
    )
