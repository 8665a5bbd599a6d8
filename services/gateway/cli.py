"""``caliber keys``: API keys of the gateway (create prints the key once)."""

from __future__ import annotations

import asyncio

import asyncpg
import typer

from services.gateway.auth import ROLES, create_key
from shared.settings import Settings

app = typer.Typer(no_args_is_help=True, help="API keys of the gateway.")


def _roles(values: list[str]) -> list[str]:
    return [r.strip() for v in values for r in v.split(",") if r.strip()]


@app.command("create")
def create(
    tenant: str = typer.Option(..., help="tenant the key belongs to (created when missing)"),
    roles: list[str] = typer.Option(
        ["admin"],
        "--roles",
        "--role",
        help=f"comma-separated or repeated, of: {', '.join(ROLES)}",
    ),
) -> None:
    """Create a key and print it once; only its hash is stored."""

    async def go() -> str:
        conn = await asyncpg.connect(Settings().postgres_url)
        try:
            return await create_key(conn, tenant, _roles(roles))
        finally:
            await conn.close()

    try:
        key = asyncio.run(go())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(key)


@app.command("list")
def list_keys(tenant: str = typer.Option(..., help="tenant whose keys to list")) -> None:
    """Id, prefix, roles and state of a tenant's keys."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(Settings().postgres_url)
        try:
            return list(
                await conn.fetch(
                    "SELECT id, key_prefix, roles, created_at, revoked_at FROM api_keys "
                    "WHERE tenant_id = $1 ORDER BY id",
                    tenant,
                )
            )
        finally:
            await conn.close()

    for r in asyncio.run(go()):
        state = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "active"
        typer.echo(f"{r['id']:>6}  {r['key_prefix']}…  {','.join(r['roles']):<30} {state}")


@app.command("revoke")
def revoke(key_id: int = typer.Argument(..., help="id shown by `caliber keys list`")) -> None:
    """Revoke a key; gateways stop accepting it within CALIBER_GATEWAY_KEY_CACHE_SECONDS."""

    async def go() -> bool:
        conn = await asyncpg.connect(Settings().postgres_url)
        try:
            return bool(
                await conn.fetchval(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
                    "WHERE id = $1 RETURNING id",
                    key_id,
                )
            )
        finally:
            await conn.close()

    if not asyncio.run(go()):
        raise typer.BadParameter(f"no key with id {key_id}")
    typer.echo(f"key {key_id} revoked")
