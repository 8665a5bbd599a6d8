"""The model registry: versions per tenant, stages, thresholds and lineage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.gateway.auth import ADMIN, READ, Principal, require
from services.gateway.outbox import enqueue
from shared.batches import model_key

router = APIRouter(prefix="/api/models", tags=["registry"])

Stage = Literal["production", "staging", "archived"]
COLUMNS = (
    "id, tenant_id, name, version, stage, parent_id, abstain_threshold, calibrator_version, "
    "calibrator::text AS calibrator, created_at, updated_at"
)


class ModelVersionIn(BaseModel):
    name: str = Field(min_length=1, max_length=256, pattern=r"^[^/]+$")
    version: str = Field(min_length=1, max_length=256, pattern=r"^[^/]+$")
    stage: Stage = "staging"
    parent_id: int | None = None
    abstain_threshold: float = Field(default=0.7, ge=0, le=1)


class ModelVersionOut(BaseModel):
    id: int
    name: str
    version: str
    stage: Stage
    parent_id: int | None
    abstain_threshold: float
    calibrator_version: str
    created_at: str
    updated_at: str


class StageChange(BaseModel):
    stage: Stage


class ModelPatch(BaseModel):
    abstain_threshold: float = Field(ge=0, le=1)


class Lineage(BaseModel):
    model: ModelVersionOut
    ancestors: list[ModelVersionOut]
    descendants: list[ModelVersionOut]


def to_out(row: asyncpg.Record) -> ModelVersionOut:
    return ModelVersionOut(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        stage=row["stage"],
        parent_id=row["parent_id"],
        abstain_threshold=row["abstain_threshold"],
        calibrator_version=row["calibrator_version"],
        created_at=row["created_at"].isoformat(),
        updated_at=row["updated_at"].isoformat(),
    )


def model_version_record(row: asyncpg.Record) -> dict[str, Any]:
    """The ModelVersion Avro record of a registry row."""
    return {
        "id": row["id"],
        "tenant": row["tenant_id"],
        "name": row["name"],
        "version": row["version"],
        "stage": row["stage"],
        "parent_id": row["parent_id"],
        "abstain_threshold": row["abstain_threshold"],
        "calibrator_version": row["calibrator_version"],
        "calibrator": row["calibrator"],
        "created_at_ms": int(row["created_at"].timestamp() * 1000),
        "updated_at_ms": int(row["updated_at"].timestamp() * 1000),
    }


async def publish_version(request: Request, conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    state = request.app.state
    await enqueue(
        conn,
        state.topics.model_updates,
        model_key(row["tenant_id"], row["name"], row["version"]).encode(),
        state.codec.encode("ModelVersion", model_version_record(row)),
    )


async def _owned(
    conn: asyncpg.Connection, tenant: str, model_id: int, lock: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM model_versions WHERE id = $1 AND tenant_id = $2"
        + (" FOR UPDATE" if lock else ""),
        model_id,
        tenant,
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"model version {model_id} not found")
    return row


async def _archive_production(
    request: Request, conn: asyncpg.Connection, tenant: str, name: str, keep: int | None
) -> None:
    rows = await conn.fetch(
        f"UPDATE model_versions SET stage = 'archived', updated_at = now() "
        f"WHERE tenant_id = $1 AND name = $2 AND stage = 'production' AND id IS DISTINCT FROM $3 "
        f"RETURNING {COLUMNS}",
        tenant,
        name,
        keep,
    )
    for row in rows:
        await publish_version(request, conn, row)


@router.get("", response_model=list[ModelVersionOut])
async def list_models(
    request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> list[ModelVersionOut]:
    rows = await request.app.state.pool.fetch(
        f"SELECT {COLUMNS} FROM model_versions WHERE tenant_id = $1 ORDER BY id", who.tenant
    )
    return [to_out(r) for r in rows]


@router.post("", response_model=ModelVersionOut, status_code=status.HTTP_201_CREATED)
async def register(
    body: ModelVersionIn, request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> ModelVersionOut:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        if body.parent_id is not None:
            await _owned(conn, who.tenant, body.parent_id)
        if body.stage == "production":
            await _archive_production(request, conn, who.tenant, body.name, None)
        try:
            row = await conn.fetchrow(
                "INSERT INTO model_versions (tenant_id, name, version, stage, parent_id, "
                f"abstain_threshold) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}",
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
        await publish_version(request, conn, row)
    return to_out(row)


@router.get("/{model_id}", response_model=ModelVersionOut)
async def get_model(
    model_id: int, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> ModelVersionOut:
    async with request.app.state.pool.acquire() as conn:
        return to_out(await _owned(conn, who.tenant, model_id))


@router.post("/{model_id}/stage", response_model=ModelVersionOut)
async def change_stage(
    model_id: int,
    body: StageChange,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> ModelVersionOut:
    """Promotion to production archives the previous production version of the same model."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        current = await _owned(conn, who.tenant, model_id, lock=True)
        if body.stage == "production":
            await _archive_production(request, conn, who.tenant, current["name"], model_id)
        row = await conn.fetchrow(
            "UPDATE model_versions SET stage = $1, updated_at = now() WHERE id = $2 "
            f"RETURNING {COLUMNS}",
            body.stage,
            model_id,
        )
        await publish_version(request, conn, row)
    return to_out(row)


@router.patch("/{model_id}", response_model=ModelVersionOut)
async def change_threshold(
    model_id: int,
    body: ModelPatch,
    request: Request,
    who: Annotated[Principal, Depends(require(ADMIN))],
) -> ModelVersionOut:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _owned(conn, who.tenant, model_id, lock=True)
        row = await conn.fetchrow(
            f"UPDATE model_versions SET abstain_threshold = $1, updated_at = now() WHERE id = $2 "
            f"RETURNING {COLUMNS}",
            body.abstain_threshold,
            model_id,
        )
        await publish_version(request, conn, row)
    return to_out(row)


@router.get("/{model_id}/lineage", response_model=Lineage)
async def lineage(
    model_id: int, request: Request, who: Annotated[Principal, Depends(require(READ))]
) -> Lineage:
    async with request.app.state.pool.acquire() as conn:
        me = await _owned(conn, who.tenant, model_id)
        ancestors = await conn.fetch(
            f"""WITH RECURSIVE up AS (
                    SELECT m.*, 1 AS depth FROM model_versions m
                    WHERE m.id = $1 AND m.tenant_id = $2
                  UNION ALL
                    SELECT p.*, up.depth + 1 FROM model_versions p JOIN up ON p.id = up.parent_id
                    WHERE p.tenant_id = $2 AND up.depth < 1000)
                SELECT {COLUMNS} FROM up WHERE id <> $1 ORDER BY depth""",
            model_id,
            who.tenant,
        )
        descendants = await conn.fetch(
            f"""WITH RECURSIVE down AS (
                    SELECT m.*, 1 AS depth FROM model_versions m
                    WHERE m.id = $1 AND m.tenant_id = $2
                  UNION ALL
                    SELECT c.*, down.depth + 1 FROM model_versions c
                    JOIN down ON c.parent_id = down.id
                    WHERE c.tenant_id = $2 AND down.depth < 1000)
                SELECT {COLUMNS} FROM down WHERE id <> $1 ORDER BY depth, id""",
            model_id,
            who.tenant,
        )
    return Lineage(
        model=to_out(me),
        ancestors=[to_out(r) for r in ancestors],
        descendants=[to_out(r) for r in descendants],
    )
