"""Uploaded reference profiles and per-feature thresholds, read from PostgreSQL.

The gateway owns the ``drift_references`` and ``drift_thresholds`` tables (it is their only
writer: ``POST /api/drift/reference``, ``PUT /api/drift/thresholds``); the drift worker reads
them from its evaluation loop, never from the batch loop, and installs a newer upload as the
active profile in its own Redis key space. An upload replaces the active profile of its model
version within one evaluation cadence; the latest upload wins over a profile built from the
reference window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.contracts.batches import model_key


@dataclass(frozen=True, slots=True)
class Upload:
    id: int
    model: str
    version: str


LATEST = """
SELECT DISTINCT ON (r.model_version_id) r.id, r.version, m.tenant_id, m.name,
       m.version AS model_version
FROM drift_references r JOIN model_versions m ON m.id = r.model_version_id
ORDER BY r.model_version_id, r.id DESC
"""
THRESHOLDS = """
SELECT m.tenant_id, m.name, m.version, t.feature, t.threshold
FROM drift_thresholds t JOIN model_versions m ON m.id = t.model_version_id
"""


class UploadSource:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def _conn(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
        assert self._pool is not None
        return self._pool

    async def latest(self) -> dict[str, Upload]:
        """The newest upload of every model version that has one."""
        rows = await (await self._conn()).fetch(LATEST)
        out = {}
        for r in rows:
            key = model_key(r["tenant_id"], r["name"], r["model_version"])
            out[key] = Upload(int(r["id"]), key, r["version"])
        return out

    async def profile(self, upload_id: int) -> dict[str, Any]:
        raw = await (await self._conn()).fetchval(
            "SELECT profile::text FROM drift_references WHERE id = $1", upload_id
        )
        data: dict[str, Any] = json.loads(raw)
        return data

    async def thresholds(self) -> dict[tuple[str, str], float]:
        """(model version key, feature) → threshold of its alerting method."""
        rows = await (await self._conn()).fetch(THRESHOLDS)
        return {
            (model_key(r["tenant_id"], r["name"], r["version"]), r["feature"]): float(
                r["threshold"]
            )
            for r in rows
        }

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
