"""Recalibration: request a run, read runs, sets and artifacts, activate a calibrator.

The gateway writes ``calibration_requests`` (a manual run waits there until the calibrator
queues it) and, as the registry's writer, the active calibrator of a model version; the
calibrator's tables are read here, never written.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.routes.registry import _owned, _publish, to_out
from services.gateway.schemas import ModelVersionOut
from services.gateway.state import state_of
from shared.recalibration.methods import METHODS
from shared.registry.events import REGISTRY_COLUMNS

router = APIRouter(prefix="/api", tags=["recalibration"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "not found in this tenant"}}


def _field_error(field: str, msg: str, kind: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        detail=[{"loc": ["body", field], "msg": msg, "type": kind}],
    )


class RecalibrateIn(BaseModel):
    methods: list[str] | None = Field(
        default=None, description=f"methods to fit (default: the calibrator's); of {list(METHODS)}"
    )
    window_seconds: int | None = Field(
        default=None, ge=60, le=90 * 86_400, description="event time the set covers"
    )


class RunAccepted(BaseModel):
    run_id: uuid.UUID
    status: str


class RunSummary(BaseModel):
    run_id: uuid.UUID
    model_version_id: int
    trigger: str
    status: str
    verdict: str | None = None
    reason: str | None = None
    advice: str | None = None
    set_hash: str | None = None
    artifact_version: str | None = None
    requested_at: datetime
    finished_at: datetime | None = None


class RunOut(RunSummary):
    trigger_detail: dict[str, Any] = {}
    coalesced: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    """Held-out metrics and reliability bins ``before``/``after``, ``candidates``, ``gate``
    and ``advice`` (with the reference and current discrimination numbers)."""
    coalesced_into: uuid.UUID | None = None


class CalibratorIn(BaseModel):
    artifact_version: str | None = Field(
        default=None,
        description="an artifact of this model version, or 'identity'; default: the staged one",
    )


class CalibratorsOut(BaseModel):
    active: str
    staged: str | None
    staged_run_id: uuid.UUID | None


_RUN_COLUMNS = (
    "run_id, model_version_id, trigger, status, verdict, reason, advice, set_hash, "
    "artifact_version, requested_at, finished_at"
)


@router.post(
    "/models/{model_id}/recalibrate",
    response_model=RunAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_404,
)
async def recalibrate(
    model_id: int,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
    body: RecalibrateIn | None = None,
) -> RunAccepted:
    """Ask the calibrator for a run; it coalesces with a run already waiting."""
    body = body or RecalibrateIn()
    if body.methods is not None:
        unknown = [m for m in body.methods if m not in METHODS]
        if unknown or not body.methods:
            raise _field_error(
                "methods",
                f"unknown methods {unknown}; expected some of {list(METHODS)}",
                "unknown_method",
            )
    run_id = uuid.uuid4()
    async with state_of(request).pool.acquire() as conn:
        await _owned(conn, who.tenant, model_id)
        await conn.execute(
            "INSERT INTO calibration_requests (run_id, tenant_id, model_version_id, methods, "
            "window_seconds, requested_by) VALUES ($1, $2, $3, $4, $5, $6)",
            run_id, who.tenant, model_id, body.methods, body.window_seconds, who.key_id,
        )  # fmt: skip
    return RunAccepted(run_id=run_id, status="requested")


@router.get("/models/{model_id}/calibration-runs", response_model=list[RunSummary], responses=_404)
async def list_runs(
    model_id: int, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> list[RunSummary]:
    """Runs of a model version, newest first (requests not yet queued as ``requested``)."""
    async with state_of(request).pool.acquire() as conn:
        await _owned(conn, who.tenant, model_id)
        rows = await conn.fetch(
            f"SELECT {_RUN_COLUMNS} FROM calibration_runs WHERE tenant_id = $1 AND "
            "model_version_id = $2 ORDER BY id DESC LIMIT 100",
            who.tenant, model_id,
        )  # fmt: skip
        waiting = await conn.fetch(
            "SELECT run_id, model_version_id, requested_at FROM calibration_requests q "
            "WHERE tenant_id = $1 AND model_version_id = $2 AND NOT EXISTS (SELECT 1 FROM "
            "calibration_runs r WHERE r.run_id = q.run_id OR r.coalesced @> "
            "jsonb_build_array(jsonb_build_object('run_id', q.run_id::text)))",
            who.tenant, model_id,
        )  # fmt: skip
    out = [RunSummary(**dict(w), trigger="manual", status="requested") for w in waiting] + [
        RunSummary(**dict(r)) for r in rows
    ]
    return out


@router.get("/calibration-runs/{run_id}", response_model=RunOut, responses=_404)
async def get_run(
    run_id: uuid.UUID, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> RunOut:
    """One run: before/after held-out metrics and reliability bins, advice, verdict.

    A request folded into another run answers that run, with ``coalesced_into`` set.
    """
    async with state_of(request).pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_RUN_COLUMNS}, trigger_detail::text AS d, coalesced::text AS c, "
            "result::text AS res FROM calibration_runs WHERE tenant_id = $1 AND "
            "(run_id = $2 OR coalesced @> jsonb_build_array(jsonb_build_object('run_id', "
            "$2::text))) ORDER BY (run_id = $2) DESC LIMIT 1",
            who.tenant, run_id,
        )  # fmt: skip
        if row is None:
            req = await conn.fetchrow(
                "SELECT run_id, model_version_id, requested_at FROM calibration_requests "
                "WHERE tenant_id = $1 AND run_id = $2",
                who.tenant, run_id,
            )  # fmt: skip
            if req is None:
                raise HTTPException(
                    status.HTTP_404_NOT_FOUND, f"calibration run {run_id} not found"
                )
            return RunOut(**dict(req), trigger="manual", status="requested")
    fields = {k: row[k] for k in _RUN_COLUMNS.split(", ")}
    return RunOut(
        **fields,
        trigger_detail=json.loads(row["d"]),
        coalesced=json.loads(row["c"]),
        result=json.loads(row["res"]) if row["res"] else None,
        coalesced_into=None if row["run_id"] == run_id else row["run_id"],
    )


@router.get("/calibration-sets/{set_hash}", responses=_404)
async def get_set(
    set_hash: str, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> dict[str, Any]:
    """A calibration set's manifest (its rows stay in PostgreSQL, compressed)."""
    row = await state_of(request).pool.fetchrow(
        "SELECT hash, manifest::text AS manifest, length(rows_blob) AS bytes, created_at "
        "FROM calibration_sets WHERE tenant_id = $1 AND hash = $2",
        who.tenant, set_hash.lower(),
    )  # fmt: skip
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"calibration set {set_hash} not found")
    return {
        "hash": row["hash"],
        "manifest": json.loads(row["manifest"]),
        "stored_bytes": row["bytes"],
        "created_at": row["created_at"],
    }


@router.get("/calibration-artifacts/{version}", responses=_404)
async def get_artifact(
    version: str, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> dict[str, Any]:
    """An artifact: the canonical JSON any language applies, and where it came from."""
    row = await state_of(request).pool.fetchrow(
        "SELECT version, model_version_id, kind, artifact, set_hash, created_at "
        "FROM calibration_artifacts WHERE tenant_id = $1 AND version = $2",
        who.tenant, version,
    )  # fmt: skip
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact {version} not found")
    return {**dict(row), "artifact": json.loads(row["artifact"])}


@router.get("/models/{model_id}/calibrator", response_model=CalibratorsOut, responses=_404)
async def get_calibrators(
    model_id: int, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> CalibratorsOut:
    async with state_of(request).pool.acquire() as conn:
        model = await _owned(conn, who.tenant, model_id)
        staged = await conn.fetchrow(
            "SELECT artifact_version, run_id FROM staged_calibrators "
            "WHERE tenant_id = $1 AND model_version_id = $2",
            who.tenant, model_id,
        )  # fmt: skip
    return CalibratorsOut(
        active=model["calibrator_version"],
        staged=None if staged is None else staged["artifact_version"],
        staged_run_id=None if staged is None else staged["run_id"],
    )


@router.post("/models/{model_id}/calibrator", response_model=ModelVersionOut, responses=_404)
async def activate(
    model_id: int,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
    body: CalibratorIn | None = None,
) -> ModelVersionOut:
    """Make an artifact the active calibrator (the staged one by default; an earlier one, or
    ``identity``, for a rollback); the policy applies it from model-updates."""
    version = (body or CalibratorIn()).artifact_version
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        await _owned(conn, who.tenant, model_id, lock=True)
        if version is None:
            version = await conn.fetchval(
                "SELECT artifact_version FROM staged_calibrators "
                "WHERE tenant_id = $1 AND model_version_id = $2",
                who.tenant, model_id,
            )  # fmt: skip
            if version is None:
                raise _field_error(
                    "artifact_version",
                    f"model version {model_id} has no staged calibrator; name an artifact",
                    "nothing_staged",
                )
        artifact: str | None = None
        if version != "identity":
            artifact = await conn.fetchval(
                "SELECT artifact FROM calibration_artifacts WHERE tenant_id = $1 AND "
                "version = $2 AND model_version_id = $3",
                who.tenant, version, model_id,
            )  # fmt: skip
            if artifact is None:
                raise _field_error(
                    "artifact_version",
                    f"artifact_version {version!r} is not an artifact of model version {model_id}",
                    "unknown_artifact",
                )
        row: asyncpg.Record = await conn.fetchrow(
            "UPDATE model_versions SET calibrator = $1::jsonb, calibrator_version = $2, "
            f"updated_at = now() WHERE id = $3 RETURNING {REGISTRY_COLUMNS}",
            artifact, version, model_id,
        )  # fmt: skip
        await _publish(request, conn, row)
    state_of(request).models.forget()
    return to_out(row)
