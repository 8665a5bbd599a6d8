"""Who am I, and the tenant's API keys (admins create and revoke them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.gateway.auth import ADMIN, ANY, Principal, create_key_row, require
from services.gateway.schemas import KeyCreated, KeyIn, KeyOut, Me, PathId
from services.gateway.state import state_of

router = APIRouter(prefix="/api", tags=["auth"])


@router.get("/me", response_model=Me)
async def me(who: Annotated[Principal, Depends(require(ANY))]) -> Me:
    """The tenant and roles of the key this request carries."""
    return Me(tenant=who.tenant, roles=sorted(who.roles), key_id=who.key_id)  # type: ignore[arg-type]


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(
    request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> list[KeyOut]:
    """This tenant's keys (their prefixes; the keys themselves are not stored)."""
    rows = await state_of(request).pool.fetch(
        "SELECT id, key_prefix, roles, created_at, revoked_at FROM api_keys "
        "WHERE tenant_id = $1 ORDER BY id",
        who.tenant,
    )
    return [
        KeyOut(
            id=r["id"],
            prefix=r["key_prefix"],
            roles=r["roles"],
            created_at=r["created_at"],
            revoked_at=r["revoked_at"],
        )
        for r in rows
    ]


@router.post("/keys", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create(
    body: KeyIn, request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> KeyCreated:
    """A new key of this tenant; the answer is the only time the key is shown."""
    key, row = await create_key_row(state_of(request).pool, who.tenant, body.roles)
    return KeyCreated(
        id=row["id"],
        prefix=row["key_prefix"],
        roles=row["roles"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        key=key,
        tenant=who.tenant,
    )


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def revoke(
    key_id: PathId, request: Request, who: Annotated[Principal, Depends(require(ADMIN))]
) -> None:
    """Revoke a key of this tenant (other instances stop accepting it within seconds)."""
    done = await state_of(request).pool.fetchval(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
        "WHERE id = $1 AND tenant_id = $2 RETURNING id",
        key_id,
        who.tenant,
    )
    if done is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"key {key_id} not found")
    state_of(request).keys.forget()
