"""One calibrator replica at a time runs the loops that are not per run: gathering
scheduled and requested triggers, putting back runs whose replica died, announcing results
and stepping rollouts (docs/architecture.md, "Replicas and ownership").

The leader is the replica whose own connection holds a session-level advisory lock;
PostgreSQL drops it with the connection, so a killed leader is replaced at the next poll
of a sibling. The calibration runs themselves are shared by every replica (claimed with
``FOR UPDATE SKIP LOCKED`` and leased, :mod:`services.calibrator.store`).
"""

from __future__ import annotations

import logging

import asyncpg

logger = logging.getLogger(__name__)

LEADER_LOCK = 0x43414C4942  # "CALIB"
"""Advisory lock key (session level) held by the leading calibrator replica."""


class Leadership:
    def __init__(self, dsn: str, key: int = LEADER_LOCK) -> None:
        self._dsn = dsn
        self._key = key
        self._conn: asyncpg.Connection | None = None
        self._leading = False

    async def leading(self) -> bool:
        """True while this replica holds the lock (checked on a live connection)."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._leading = False
                self._conn = await asyncpg.connect(self._dsn)
            if self._leading:
                await self._conn.fetchval("SELECT 1")  # the lock lives as long as this
                return True
            self._leading = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
            )
            if self._leading:
                logger.info("this calibrator replica leads (triggers, announcements, rollouts)")
            return self._leading
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("leadership unknown (%s); not leading this round", exc)
            await self.close()
            return False

    async def close(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
