"""API keys: hashed at rest, owned by a tenant, carrying roles."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from fastapi import HTTPException, Request, WebSocket, status

ROLES = ("producer", "reviewer", "viewer", "admin")
KEY_PREFIX = "clb_"

READ = frozenset({"viewer", "reviewer", "admin"})
PRODUCE = frozenset({"producer", "admin"})
REVIEW = frozenset({"reviewer", "admin"})
ADMIN = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    tenant: str
    roles: frozenset[str]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(pool: asyncpg.Pool, tenant: str, roles: list[str]) -> str:
    """Create the tenant when missing and a new key for it; the key is returned once."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ValueError(f"roles must be some of {', '.join(ROLES)}; got {roles}")
    key = new_key()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING", tenant
        )
        await conn.execute(
            "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, roles) VALUES ($1, $2, $3, $4)",
            tenant,
            hash_key(key),
            key[:10],
            roles,
        )
    return key


def _presented(headers: dict[str, str], query: dict[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("api_key")


async def lookup(pool: asyncpg.Pool, key: str | None) -> Principal | None:
    if not key:
        return None
    digest = hash_key(key)
    row = await pool.fetchrow(
        "SELECT id, tenant_id, roles, key_hash FROM api_keys "
        "WHERE key_hash = $1 AND revoked_at IS NULL",
        digest,
    )
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return Principal(row["id"], row["tenant_id"], frozenset(row["roles"]))


def require(allowed: frozenset[str]) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's key must be valid and hold one of ``allowed``."""

    async def dependency(request: Request) -> Principal:
        key = _presented(dict(request.headers), dict(request.query_params))
        principal = await lookup(request.app.state.pool, key)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid API key is required (header X-API-Key or Authorization: Bearer)",
            )
        if not principal.roles & allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this key's roles ({', '.join(sorted(principal.roles))}) do not allow "
                f"this; needs one of {', '.join(sorted(allowed))}",
            )
        return principal

    return dependency


async def websocket_principal(ws: WebSocket, allowed: frozenset[str]) -> Principal | None:
    key = _presented(dict(ws.headers), dict(ws.query_params))
    principal = await lookup(ws.app.state.pool, key)
    if principal is None or not principal.roles & allowed:
        return None
    return principal
