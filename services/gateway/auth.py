"""API keys: hashed at rest, owned by a tenant, carrying roles.

A key is 32 random bytes (``secrets.token_urlsafe``) behind a short prefix; only its
SHA-256 is stored, and the digest is compared in constant time. A looked-up key is kept in
memory for ``gateway_key_cache_seconds``, so the hot path does not wait on PostgreSQL; a
revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import HTTPException, Request, Security, WebSocket, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

ROLES = ("producer", "reviewer", "viewer", "admin")
KEY_PREFIX = "clb_"
PREFIX_SHOWN = 10
"""Characters of a key kept in clear (``key_prefix``) so a person can tell keys apart."""

READ = frozenset({"viewer", "reviewer", "admin"})
PRODUCE = frozenset({"producer", "admin"})
REVIEW = frozenset({"reviewer", "admin"})
ADMIN = frozenset({"admin"})
ANY = frozenset(ROLES)

_CACHE_LIMIT = 10_000
# Declared for the OpenAPI docs (their "Authorize" button); the key is read by presented_key.
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int | None
    """None for the anonymous principal (``CALIBER_GATEWAY_ANONYMOUS``), which has no key."""
    tenant: str
    roles: frozenset[str]

    @property
    def anonymous(self) -> bool:
        return self.key_id is None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_roles(roles: Sequence[str]) -> list[str]:
    """The roles, deduplicated in a stable order; ValueError naming an unknown one."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ValueError(f"roles must be one or more of {', '.join(ROLES)}; got {list(roles)}")
    return [r for r in ROLES if r in roles]


async def create_key(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: str, roles: Sequence[str]
) -> str:
    """Create the tenant when missing and a new key for it; the key is returned once."""
    return (await create_key_row(conn, tenant, roles))[0]


async def create_key_row(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: str, roles: Sequence[str]
) -> tuple[str, asyncpg.Record]:
    """(key, its api_keys row); the tenant is created when missing."""
    wanted = check_roles(roles)
    if not tenant or "/" in tenant:
        raise ValueError(f"tenant {tenant!r} must be a non-empty name without '/'")
    key = new_key()
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return key, await _insert_key(c, tenant, wanted, key)
    return key, await _insert_key(conn, tenant, wanted, key)


async def _insert_key(
    conn: asyncpg.Connection, tenant: str, roles: list[str], key: str
) -> asyncpg.Record:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING", tenant
        )
        row: asyncpg.Record = await conn.fetchrow(
            "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, roles) "
            "VALUES ($1, $2, $3, $4) RETURNING id, key_prefix, roles, created_at, revoked_at",
            tenant,
            hash_key(key),
            key[:PREFIX_SHOWN],
            roles,
        )
    return row


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries in ``X-API-Key`` or ``Authorization: Bearer``.

    Never the query string on REST: a URL lands in access logs, proxies and browser
    history. Only ``/ws/live`` (browsers cannot set a WebSocket's headers) also reads
    ``?api_key=``, see :func:`websocket_principal`.
    """
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class KeyStore:
    """Looks keys up in PostgreSQL, remembering answers for ``ttl`` seconds.

    ``anonymous`` is who a request without a key is (anonymous access mode), or None: then
    such a request has no principal. A key that is presented is always checked: a wrong
    key is refused even in anonymous mode.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float, anonymous: Principal | None = None) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self.anonymous = anonymous

    async def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return self.anonymous
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool.fetchrow(
            "SELECT id, tenant_id, roles, key_hash FROM api_keys "
            "WHERE key_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        principal = None
        if row is not None and hmac.compare_digest(row["key_hash"], digest):
            principal = Principal(row["id"], row["tenant_id"], frozenset(row["roles"]))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget(self) -> None:
        """Drop every remembered answer (after this process revoked a key)."""
        self._cache.clear()


def unauthorized_detail() -> str:
    return "a valid API key is required (header X-API-Key or Authorization: Bearer)"


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=unauthorized_detail(),
        headers={"WWW-Authenticate": "Bearer"},
    )


def require(allowed: frozenset[str]) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's key must be valid and hold one of ``allowed``.

    The gateway's edge checks the key before the body is read and leaves the principal in
    the request state; the lookup here serves an app run without that edge.
    """

    async def dependency(
        request: Request,
        _header: Annotated[str | None, Security(_HEADER)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    ) -> Principal:
        principal: Principal | None = getattr(request.state, "caliber_principal", None)
        if principal is None:
            keys: KeyStore = request.app.state.gateway.keys
            principal = await keys.lookup(presented_key(request.headers))
        if principal is None:
            raise _unauthorized()
        if not principal.roles & allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this key's roles ({', '.join(sorted(principal.roles))}) do not allow "
                f"this; it needs one of {', '.join(sorted(allowed))}",
            )
        return principal

    dependency.caliber_roles = allowed  # type: ignore[attr-defined]
    return dependency


async def websocket_principal(ws: WebSocket, allowed: frozenset[str]) -> Principal | None:
    """The caller of ``/ws/live``: a key in the headers or, there only, ``?api_key=``."""
    keys: KeyStore = ws.app.state.gateway.keys
    key = presented_key(ws.headers) or ws.query_params.get("api_key") or None
    principal = await keys.lookup(key)
    if principal is None or not principal.roles & allowed:
        return None
    return principal
