"""A short-lived cache of registry rows, so each prediction request doesn't query them."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

TTL_SECONDS = 2.0


class ModelCache:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._rows: dict[tuple[Any, ...], tuple[float, asyncpg.Record | None]] = {}

    async def _get(self, key: tuple[Any, ...], sql: str, *args: Any) -> asyncpg.Record | None:
        hit = self._rows.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < TTL_SECONDS:
            return hit[1]
        row = await self._pool.fetchrow(sql, *args)
        self._rows[key] = (now, row)
        return row

    async def by_id(self, tenant: str, model_id: int) -> asyncpg.Record | None:
        return await self._get(
            ("id", tenant, model_id),
            "SELECT id, name, version, abstain_threshold FROM model_versions "
            "WHERE id = $1 AND tenant_id = $2",
            model_id,
            tenant,
        )

    async def by_name(self, tenant: str, name: str, version: str) -> asyncpg.Record | None:
        return await self._get(
            ("name", tenant, name, version),
            "SELECT id, name, version, abstain_threshold FROM model_versions "
            "WHERE tenant_id = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )
