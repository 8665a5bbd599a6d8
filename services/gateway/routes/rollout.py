"""Calibrator rollout: ask for a transition, read a rollout and its transition log.

The calibrator owns the rollout state machine; an operator's promote, abort, rollback (or
a manual shadow or canary) is a row of ``rollout_requests`` that the calibrator carries out
within a poll interval (``GET /api/rollout-requests/{id}`` says how it ended). Everything a
request can get wrong is refused here first, with a 4xx naming the field.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.routes.registry import _owned
from services.gateway.state import state_of
from shared.windows.rollout import read_rollout

router = APIRouter(prefix="/api", tags=["rollout"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "not found in this tenant"}}
_409: dict[int | str, dict[str, Any]] = {409: {"description": "the rollout is not in a state "
                                               "that allows the action"}}  # fmt: skip


def _field_error(field: str, msg: str, kind: str, code: int = 422) -> HTTPException:
    return HTTPException(code, detail=[{"loc": ["body", field], "msg": msg, "type": kind}])


class RolloutRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["shadow", "canary", "promote", "abort", "rollback"]
    artifact_version: str | None = Field(
        default=None,
        max_length=200,
        description="the candidate (shadow or canary without an open rollout); "
        "default: the staged calibrator",
    )
    canary_share: float | None = Field(
        default=None, gt=0, le=1, description="share of events the canary decides (0, 1]"
    )


class RolloutRequested(BaseModel):
    request_id: uuid.UUID
    status: str


async def _check_request(
    conn: Any, tenant: str, model_id: int, body: RolloutRequestIn
) -> str | None:
    """Refuse what cannot be carried out; the artifact a new rollout would use."""
    open_ = await conn.fetchrow(
        "SELECT candidate_version, stage FROM calibrator_rollouts WHERE tenant_id = $1 AND "
        "model_version_id = $2 AND stage IN ('shadow', 'canary')",
        tenant, model_id,
    )  # fmt: skip
    version = body.artifact_version
    if body.action in ("shadow", "canary") and open_ is None:
        if version is None:
            version = await conn.fetchval(
                "SELECT artifact_version FROM staged_calibrators WHERE tenant_id = $1 AND "
                "model_version_id = $2",
                tenant, model_id,
            )  # fmt: skip
            if version is None:
                raise _field_error(
                    "artifact_version", "nothing is staged for this model version; name one",
                    "nothing_staged",
                )  # fmt: skip
        known = await conn.fetchval(
            "SELECT 1 FROM calibration_artifacts WHERE tenant_id = $1 AND version = $2 "
            "AND model_version_id = $3",
            tenant, version, model_id,
        )  # fmt: skip
        if not known:
            raise _field_error(
                "artifact_version",
                f"artifact_version {version!r} is not a calibrator of model version {model_id}",
                "unknown_artifact",
            )
        return version
    if version is not None and (open_ is None or open_["candidate_version"] != version):
        raise _field_error(
            "artifact_version",
            f"artifact_version {version!r} is not the candidate under rollout",
            "not_the_candidate", 409,
        )  # fmt: skip
    if open_ is None and body.action in ("promote", "abort"):
        raise _field_error(
            "action", f"no rollout is open on model version {model_id} to {body.action}",
            "no_open_rollout", 409,
        )  # fmt: skip
    if open_ is not None and body.action == "shadow" and open_["stage"] == "canary":
        raise _field_error("action", "the candidate is in canary already", "already_in_canary", 409)
    return version


@router.post(
    "/models/{model_id}/rollout",
    response_model=RolloutRequested,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**_404, **_409},
)
async def request_transition(
    model_id: int,
    body: RolloutRequestIn,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> RolloutRequested:
    """Ask the calibrator to move the rollout: shadow or canary (a named or the staged
    calibrator), promote, abort, or roll back (the open candidate, or the last promotion)."""
    request_id = uuid.uuid4()
    async with state_of(request).pool.acquire() as conn:
        await _owned(conn, who.tenant, model_id)
        version = await _check_request(conn, who.tenant, model_id, body)
        await conn.execute(
            "INSERT INTO rollout_requests (request_id, tenant_id, model_version_id, action, "
            "artifact_version, canary_share, requested_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            request_id, who.tenant, model_id, body.action, version, body.canary_share,
            who.key_id,
        )  # fmt: skip
    return RolloutRequested(request_id=request_id, status="requested")


@router.get("/rollout-requests/{request_id}", responses=_404)
async def get_request(
    request_id: uuid.UUID, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> dict[str, Any]:
    """A rollout request and how it ended: ``requested``, ``done`` or ``refused`` (why)."""
    row = await state_of(request).pool.fetchrow(
        "SELECT q.request_id, q.model_version_id, q.action, q.artifact_version, "
        "q.canary_share, q.requested_at, o.outcome, o.reason, o.transition_id "
        "FROM rollout_requests q LEFT JOIN rollout_request_outcomes o USING (request_id) "
        "WHERE q.tenant_id = $1 AND q.request_id = $2",
        who.tenant, request_id,
    )  # fmt: skip
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"rollout request {request_id} not found")
    out = dict(row)
    out["status"] = out.pop("outcome") or "requested"
    return out


def _json(value: Any) -> Any:
    """A dataclass tree as JSON-ready values."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _json(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


@router.get("/models/{model_id}/rollout", responses=_404)
async def get_rollout(
    model_id: int, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> dict[str, Any]:
    """The active calibrator, the candidate beside it (shadow or canary) with the paired
    metrics of both maps and of each arm so far, and the transition log, newest first."""
    state = state_of(request)
    async with state.pool.acquire() as conn:
        model = await _owned(conn, who.tenant, model_id)
        rollout = await conn.fetchrow(
            "SELECT id, candidate_version, previous_version, stage, canary_share, started_at, "
            "updated_at FROM calibrator_rollouts WHERE tenant_id = $1 AND model_version_id = $2 "
            "ORDER BY (stage IN ('shadow', 'canary')) DESC, id DESC LIMIT 1",
            who.tenant, model_id,
        )  # fmt: skip
        log = await conn.fetch(
            "SELECT id, candidate_version, from_stage, to_stage, trigger, reason, "
            "numbers::text AS numbers, created_at FROM rollout_transitions "
            "WHERE tenant_id = $1 AND model_version_id = $2 ORDER BY id DESC LIMIT 100",
            who.tenant, model_id,
        )  # fmt: skip
    key = f"{model['tenant_id']}/{model['name']}/{model['version']}"
    paired = None
    if rollout is not None:
        stats = await read_rollout(
            state.redis, state.settings.redis_prefix, key, rollout["candidate_version"]
        )
        paired = {**_json(stats), "review_rate_delta": stats.review_rate_delta}
    return {
        "model_version_id": model_id,
        "active": model["calibrator_version"],
        "candidate": model["candidate_version"],
        "stage": model["rollout_stage"],
        "canary_share": model["canary_share"],
        "rollout": None if rollout is None else dict(rollout),
        "paired": paired,
        "transitions": [{**dict(r), "numbers": json.loads(r["numbers"])} for r in log],
    }
