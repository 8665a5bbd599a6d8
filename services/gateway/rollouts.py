"""Apply the calibrator's rollout transitions to the registry, once each, in order.

The calibrator owns the rollout state machine and its audit trail (``rollout_transitions``);
the gateway owns ``model_versions`` and its outbox. This loop reads the transitions a model
version has not had applied (id above its ``rollout_applied``), and for each, in one
transaction, sets the registry fields the transition names (the candidate, its stage and
canary share, or the new active calibrator), records its id in ``rollout_applied`` and
writes the new state to the outbox, so the policy learns it from ``<ns>.model-updates``.
A replay finds ``rollout_applied`` already at that id and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from services.gateway.outbox import enqueue
from shared.contracts.codec import AvroCodec
from shared.registry.events import REGISTRY_COLUMNS, model_update_message

logger = logging.getLogger(__name__)

_PENDING = (
    "SELECT t.id, t.model_version_id, t.registry::text AS registry FROM rollout_transitions t "
    "JOIN model_versions m ON m.id = t.model_version_id AND m.tenant_id = t.tenant_id "
    "WHERE t.id > m.rollout_applied ORDER BY t.id LIMIT $1"
)
_FIELDS = ("candidate_version", "candidate_calibrator", "rollout_stage", "canary_share")


def _assignments(registry: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """SET clause and its arguments ($3 on) for a transition's registry effect."""
    parts, args = [], []
    for name in (*_FIELDS, "calibrator_version", "calibrator"):
        if name not in registry:
            continue
        args.append(registry[name])
        cast = "::jsonb" if name in ("candidate_calibrator", "calibrator") else ""
        parts.append(f"{name} = ${len(args) + 2}{cast}")
    return ", ".join(parts), args


async def apply_pending(pool: asyncpg.Pool, codec: AvroCodec, topic: str, limit: int = 100) -> int:
    """Apply the transitions waiting; how many were applied."""
    rows = await pool.fetch(_PENDING, limit)
    applied = 0
    for row in rows:
        registry = json.loads(row["registry"])
        sets, args = _assignments(registry)
        async with pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT rollout_applied FROM model_versions WHERE id = $1 FOR UPDATE",
                row["model_version_id"],
            )
            if current is None or current >= row["id"]:
                continue
            updated = await conn.fetchrow(
                f"UPDATE model_versions SET {sets + ', ' if sets else ''}rollout_applied = $2, "
                f"updated_at = now() WHERE id = $1 RETURNING {REGISTRY_COLUMNS}",
                row["model_version_id"], row["id"], *args,
            )  # fmt: skip
            key, value = model_update_message(codec, updated)
            await enqueue(conn, topic, key, value)
            applied += 1
    return applied


async def follow_transitions(
    pool: asyncpg.Pool,
    codec: AvroCodec,
    topic: str,
    poll_seconds: float,
    stop: asyncio.Event,
    on_applied: Callable[[], None],
) -> None:
    """Apply transitions every ``poll_seconds`` until ``stop``."""
    while not stop.is_set():
        try:
            if await apply_pending(pool, codec, topic):
                on_applied()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("rollout transitions: %s: %s; retrying", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)
