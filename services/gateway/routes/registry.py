"""The model registry: versions per tenant, stages, thresholds and lineage.

Every change writes the new state of each changed version to the outbox, for the compacted
``<ns>.model-updates`` topic, in the transaction of the change. Stage changes of one model
(tenant, name) are serialised with an advisory lock, so at most one version is in
production and promoting one archives the previous.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.outbox import enqueue
from services.gateway.schemas import (
    Lineage,
    ModelPatch,
    ModelVersionIn,
    ModelVersionOut,
    PathId,
    StageChange,
)
from services.gateway.state import state_of
from shared.registry.events import REGISTRY_COLUMNS, model_update_message

router = APIRouter(prefix="/api/models", tags=["registry"])
_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such model version in this tenant"}
}


def to_out(row: asyncpg.Record) -> ModelVersionOut:
    return ModelVersionOut(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        stage=row["stage"],
        parent_id=row["parent_id"],
        abstain_threshold=row["abstain_threshold"],
        calibrator_version=row["calibrator_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        segment_key=row["segment_key"],
    )


async def _publish(request: Request, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    key, value = model_update_message(state_of(request).codec, row)
    await enqueue(conn, state_of(request).topics.model_updates, key, value)


async def _owned(
    conn: asyncpg.Connection, tenant: str, model_id: int, lock: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {REGISTRY_COLUMNS} FROM model_versions WHERE id = $1 AND tenant_id = $2"
        + (" FOR UPDATE" if lock else ""),
        model_id,
        tenant,
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"model version {model_id} not found")
    return row


async def _lock_model(conn: asyncpg.Connection, tenant: str, name: str) -> None:
    """Serialise stage changes of one model (tenant, name) until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{tenant}/{name}")


async def _archive_production(
    request: Request, conn: asyncpg.Connection, tenant: str, name: str, keep: int | None
) -> None:
    rows = await conn.fetch(
        f"UPDATE model_versions SET stage = 'archived', updated_at = now() "
        f"WHERE tenant_id = $1 AND name = $2 AND stage = 'production' AND id IS DISTINCT FROM $3 "
        f"RETURNING {REGISTRY_COLUMNS}",
        tenant,
        name,
        keep,
    )
    for row in rows:
        await _publish(request, conn, row)


@router.get("", response_model=list[ModelVersionOut])
async def list_models(
    request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> list[ModelVersionOut]:
    """This tenant's model versions, oldest first."""
    rows = await state_of(request).pool.fetch(
        f"SELECT {REGISTRY_COLUMNS} FROM model_versions WHERE tenant_id = $1 ORDER BY id",
        who.tenant,
    )
    return [to_out(r) for r in rows]


@router.post(
    "",
    response_model=ModelVersionOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "that name and version exist"}},
)
async def register(
    body: ModelVersionIn, request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> ModelVersionOut:
    """Register a version; registering it in production archives the previous one."""
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        if body.parent_id is not None:
            parent = await conn.fetchval(
                "SELECT id FROM model_versions WHERE id = $1 AND tenant_id = $2",
                body.parent_id,
                who.tenant,
            )
            if parent is None:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_ENTITY,
                    detail=[
                        {
                            "loc": ["body", "parent_id"],
                            "msg": f"parent_id {body.parent_id} is not a model version of "
                            "this tenant",
                            "type": "unknown_parent",
                        }
                    ],
                )
        if body.stage == "production":
            await _lock_model(conn, who.tenant, body.name)
            await _archive_production(request, conn, who.tenant, body.name, None)
        try:
            async with conn.transaction():  # a savepoint, so a duplicate leaves no trace
                row = await conn.fetchrow(
                    "INSERT INTO model_versions (tenant_id, name, version, stage, parent_id, "
                    "abstain_threshold) VALUES ($1, $2, $3, $4, $5, $6) "
                    f"RETURNING {REGISTRY_COLUMNS}",
                    who.tenant,
                    body.name,
                    body.version,
                    body.stage,
                    body.parent_id,
                    body.abstain_threshold,
                )
        except asyncpg.UniqueViolationError:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"model {body.name!r} version {body.version!r} already exists",
            ) from None
        await _publish(request, conn, row)
    state_of(request).models.forget()
    return to_out(row)


@router.get("/{model_id}", response_model=ModelVersionOut, responses=_404)
async def get_model(
    model_id: PathId, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> ModelVersionOut:
    async with state_of(request).pool.acquire() as conn:
        return to_out(await _owned(conn, who.tenant, model_id))


@router.post("/{model_id}/stage", response_model=ModelVersionOut, responses=_404)
async def change_stage(
    model_id: PathId,
    body: StageChange,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> ModelVersionOut:
    """Move a version to a stage; promotion to production archives the previous one."""
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        current = await _owned(conn, who.tenant, model_id)
        await _lock_model(conn, who.tenant, current["name"])
        if body.stage == "production":
            await _archive_production(request, conn, who.tenant, current["name"], model_id)
        row = await conn.fetchrow(
            "UPDATE model_versions SET stage = $1, updated_at = now() WHERE id = $2 "
            f"RETURNING {REGISTRY_COLUMNS}",
            body.stage,
            model_id,
        )
        await _publish(request, conn, row)
    state_of(request).models.forget()
    return to_out(row)


@router.patch("/{model_id}", response_model=ModelVersionOut, responses=_404)
async def change_threshold(
    model_id: PathId,
    body: ModelPatch,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> ModelVersionOut:
    """Change the abstain threshold; the policy applies it from the next batch it reads."""
    async with state_of(request).pool.acquire() as conn, conn.transaction():
        await _owned(conn, who.tenant, model_id, lock=True)
        row = await conn.fetchrow(
            "UPDATE model_versions SET abstain_threshold = $1, updated_at = now() WHERE id = $2 "
            f"RETURNING {REGISTRY_COLUMNS}",
            body.abstain_threshold,
            model_id,
        )
        await _publish(request, conn, row)
    state_of(request).models.forget()
    return to_out(row)


_WALK = """
WITH RECURSIVE walk AS (
    SELECT m.id, m.parent_id, 0 AS depth FROM model_versions m
    WHERE m.id = $1 AND m.tenant_id = $2
  UNION ALL
    SELECT n.id, n.parent_id, walk.depth + 1 FROM model_versions n JOIN walk ON {join}
    WHERE n.tenant_id = $2 AND walk.depth < 10000
)
SELECT {columns}, walk.depth FROM walk JOIN model_versions m USING (id)
WHERE walk.depth > 0 ORDER BY walk.depth, m.id
"""
_COLUMNS = ", ".join(f"m.{c.strip()}" for c in REGISTRY_COLUMNS.split(","))


@router.get("/{model_id}/lineage", response_model=Lineage, responses=_404)
async def lineage(
    model_id: PathId, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> Lineage:
    """Ancestors (parent, grandparent, ...) and descendants (children, grandchildren, ...)."""
    async with state_of(request).pool.acquire() as conn:
        me = await _owned(conn, who.tenant, model_id)
        up = await conn.fetch(
            _WALK.format(join="n.id = walk.parent_id", columns=_COLUMNS), model_id, who.tenant
        )
        down = await conn.fetch(
            _WALK.format(join="n.parent_id = walk.id", columns=_COLUMNS), model_id, who.tenant
        )
    return Lineage(
        model=to_out(me),
        ancestors=[to_out(r) for r in up],
        descendants=[to_out(r) for r in down],
    )
