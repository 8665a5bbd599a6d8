"""``caliber keys``: API keys for the gateway."""

from __future__ import annotations

import asyncio

import asyncpg
import typer

from services.gateway.auth import ROLES, create_key
from shared.settings import Settings

app = typer.Typer(no_args_is_help=True, help="API keys of the gateway.")


@app.command("create")
def create(
    tenant: str = typer.Option(..., help="tenant the key belongs to (created when missing)"),
    roles: list[str] = typer.Option(
        ["admin"], "--role", help=f"repeat per role: {', '.join(ROLES)}"
    ),
) -> None:
    """Create a key and print it once; only its hash is stored."""

    async def go() -> str:
        pool = await asyncpg.create_pool(Settings().postgres_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await create_key(pool, tenant, roles)
        finally:
            await pool.close()

    try:
        key = asyncio.run(go())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(key)
