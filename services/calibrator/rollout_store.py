"""The calibrator's rollout tables: the state of each candidate and its audit trail.

The calibrator is the one writer of ``calibrator_rollouts``, ``rollout_transitions`` and
``rollout_request_outcomes``; it reads ``model_versions``, ``staged_calibrators``,
``calibration_artifacts`` and the gateway's ``rollout_requests``. A transition is one
transaction: the rollout's new stage, its audit row (the numbers that decided it and what
the registry must become), and the outcome of the request that asked for it. The gateway
applies each audit row to the registry once, in id order, through its outbox
(``services.gateway.rollouts``); the ``recalibration`` alert is published after the commit
and the row marked ``announced`` (a crash in between publishes the same alert id again).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

OPEN_STAGES = ("shadow", "canary")


@dataclass(frozen=True, slots=True)
class Rollout:
    """An open (or the last promoted) rollout, with what the registry says of its model."""

    id: int
    tenant: str
    model_version_id: int
    model_key: str
    candidate_version: str
    previous_version: str
    stage: str
    canary_share: float
    active_version: str = ""
    """The model version's active calibrator now (the registry's)."""


@dataclass(frozen=True, slots=True)
class Transition:
    to_stage: str
    trigger: str
    reason: str
    numbers: Mapping[str, Any]
    canary_share: float = 0.0
    request_id: uuid.UUID | None = None


_ROLLOUT = (
    "SELECT r.id, r.tenant_id, r.model_version_id, m.tenant_id || '/' || m.name || '/' || "
    "m.version AS model_key, r.candidate_version, r.previous_version, r.stage, r.canary_share, "
    "m.calibrator_version AS active_version "
    "FROM calibrator_rollouts r JOIN model_versions m ON m.id = r.model_version_id "
)


def _rollout(row: asyncpg.Record) -> Rollout:
    return Rollout(
        row["id"], row["tenant_id"], row["model_version_id"], row["model_key"],
        row["candidate_version"], row["previous_version"], row["stage"], row["canary_share"],
        row["active_version"],
    )  # fmt: skip


async def _artifact(conn: asyncpg.Connection, tenant: str, version: str) -> str | None:
    if version == "identity":
        return None
    found: str | None = await conn.fetchval(
        "SELECT artifact FROM calibration_artifacts WHERE tenant_id = $1 AND version = $2",
        tenant, version,
    )  # fmt: skip
    return found


async def registry_effect(
    conn: asyncpg.Connection, rollout: Rollout, to_stage: str, share: float
) -> dict[str, Any]:
    """What the model version's registry entry becomes after a transition."""
    none = {"candidate_version": None, "candidate_calibrator": None, "rollout_stage": None,
            "canary_share": 0.0}  # fmt: skip
    if to_stage in OPEN_STAGES:
        artifact = await _artifact(conn, rollout.tenant, rollout.candidate_version)
        return {
            "candidate_version": rollout.candidate_version,
            "candidate_calibrator": artifact,
            "rollout_stage": to_stage,
            "canary_share": share if to_stage == "canary" else 0.0,
        }
    if to_stage == "promoted":
        artifact = await _artifact(conn, rollout.tenant, rollout.candidate_version)
        return {**none, "calibrator_version": rollout.candidate_version, "calibrator": artifact}
    if rollout.stage == "promoted":  # a rollback after the promotion restores the previous
        artifact = await _artifact(conn, rollout.tenant, rollout.previous_version)
        return {**none, "calibrator_version": rollout.previous_version, "calibrator": artifact}
    return none


class RolloutStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open_rollouts(self) -> list[Rollout]:
        rows = await self.pool.fetch(
            _ROLLOUT + "WHERE r.stage IN ('shadow', 'canary') ORDER BY r.id"
        )
        return [_rollout(r) for r in rows]

    async def open_of(self, tenant: str, model_id: int) -> Rollout | None:
        row = await self.pool.fetchrow(
            _ROLLOUT + "WHERE r.tenant_id = $1 AND r.model_version_id = $2 "
            "AND r.stage IN ('shadow', 'canary')",
            tenant, model_id,
        )  # fmt: skip
        return None if row is None else _rollout(row)

    async def last_promoted(self, tenant: str, model_id: int) -> Rollout | None:
        row = await self.pool.fetchrow(
            _ROLLOUT + "WHERE r.tenant_id = $1 AND r.model_version_id = $2 "
            "AND r.stage = 'promoted' AND m.calibrator_version = r.candidate_version "
            "ORDER BY r.id DESC LIMIT 1",
            tenant, model_id,
        )  # fmt: skip
        return None if row is None else _rollout(row)

    async def staged_waiting(self) -> list[asyncpg.Record]:
        """Staged calibrators never rolled out, of model versions with no open rollout and
        another active map, whose registry has every transition applied (the active map a
        rollout starts from, and is compared with, is then the one the policy runs)."""
        return list(
            await self.pool.fetch(
                "SELECT s.tenant_id, s.model_version_id, s.artifact_version, s.run_id "
                "FROM staged_calibrators s JOIN model_versions m ON m.id = s.model_version_id "
                "WHERE m.calibrator_version <> s.artifact_version AND NOT EXISTS (SELECT 1 "
                "FROM calibrator_rollouts r WHERE r.tenant_id = s.tenant_id AND "
                "r.model_version_id = s.model_version_id AND (r.candidate_version = "
                "s.artifact_version OR r.stage IN ('shadow', 'canary'))) AND NOT EXISTS "
                "(SELECT 1 FROM rollout_transitions t WHERE t.tenant_id = s.tenant_id AND "
                "t.model_version_id = s.model_version_id AND t.id > m.rollout_applied) "
                "ORDER BY s.staged_at"
            )
        )

    async def start(
        self, tenant: str, model_id: int, candidate: str, run_id: uuid.UUID | None,
        transition: Transition,
    ) -> int | None:  # fmt: skip
        """Open a rollout in shadow (or canary) and record its first transition; None when
        the model version has an open rollout already or this candidate was rolled out."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 2))",
                f"rollout/{tenant}/{model_id}",
            )
            active = await conn.fetchval(
                "SELECT calibrator_version FROM model_versions WHERE id = $1", model_id
            )
            new_id = await conn.fetchval(
                "INSERT INTO calibrator_rollouts (tenant_id, model_version_id, "
                "candidate_version, previous_version, stage, canary_share, run_id) "
                "SELECT $1, $2, $3, $4, $6, $7, $5 WHERE NOT EXISTS (SELECT 1 FROM "
                "calibrator_rollouts WHERE tenant_id = $1 AND model_version_id = $2 AND "
                "stage IN ('shadow', 'canary')) ON CONFLICT (tenant_id, model_version_id, "
                "candidate_version) DO NOTHING RETURNING id",
                tenant, model_id, candidate, active, run_id, transition.to_stage,
                transition.canary_share,
            )  # fmt: skip
            if new_id is None:
                return None
            key = await conn.fetchval(
                "SELECT tenant_id || '/' || name || '/' || version FROM model_versions "
                "WHERE id = $1",
                model_id,
            )
            rollout = Rollout(new_id, tenant, model_id, key, candidate, active, "staged", 0.0)
            await self._record(conn, rollout, transition)
            return int(new_id)

    async def move(self, rollout: Rollout, transition: Transition) -> int | None:
        """Record one transition of ``rollout``; None when its stage changed meanwhile."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                "UPDATE calibrator_rollouts SET stage = $2, canary_share = $3, "
                "updated_at = now() WHERE id = $1 AND stage = $4 RETURNING id",
                rollout.id, transition.to_stage, transition.canary_share, rollout.stage,
            )  # fmt: skip
            if moved is None:
                return None
            return await self._record(conn, rollout, transition)

    async def _record(
        self, conn: asyncpg.Connection, rollout: Rollout, transition: Transition
    ) -> int:
        registry = await registry_effect(
            conn, rollout, transition.to_stage, transition.canary_share
        )
        tid: int = await conn.fetchval(
            "INSERT INTO rollout_transitions (rollout_id, tenant_id, model_version_id, "
            "candidate_version, from_stage, to_stage, trigger, reason, numbers, registry, "
            "request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            rollout.id, rollout.tenant, rollout.model_version_id, rollout.candidate_version,
            rollout.stage, transition.to_stage, transition.trigger, transition.reason[:500],
            json.dumps(dict(transition.numbers), default=str), json.dumps(registry),
            transition.request_id,
        )  # fmt: skip
        if transition.request_id is not None:
            await self._outcome(conn, transition.request_id, "done", transition.reason, tid)
        return tid

    async def _outcome(
        self, conn: asyncpg.Connection, request_id: uuid.UUID, outcome: str, reason: str,
        transition_id: int | None,
    ) -> None:  # fmt: skip
        await conn.execute(
            "INSERT INTO rollout_request_outcomes (request_id, outcome, reason, transition_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING",
            request_id, outcome, reason[:500], transition_id,
        )  # fmt: skip

    async def refuse(self, request_id: uuid.UUID, reason: str) -> None:
        async with self.pool.acquire() as conn:
            await self._outcome(conn, request_id, "refused", reason, None)

    async def requests(self) -> list[asyncpg.Record]:
        """Operators' requests not yet handled, oldest first."""
        return list(
            await self.pool.fetch(
                "SELECT q.request_id, q.tenant_id, q.model_version_id, q.action, "
                "q.artifact_version, q.canary_share FROM rollout_requests q WHERE NOT EXISTS "
                "(SELECT 1 FROM rollout_request_outcomes o WHERE o.request_id = q.request_id) "
                "ORDER BY q.requested_at LIMIT 100"
            )
        )

    async def unannounced(self) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT t.id, t.tenant_id, t.model_version_id, m.name, m.version, "
                "t.candidate_version, t.from_stage, t.to_stage, t.trigger, t.reason, "
                "t.numbers::text AS numbers, t.created_at FROM rollout_transitions t "
                "JOIN model_versions m ON m.id = t.model_version_id "
                "WHERE NOT t.announced ORDER BY t.id LIMIT 100"
            )
        )

    async def mark_announced(self, ids: list[int]) -> None:
        await self.pool.execute(
            "UPDATE rollout_transitions SET announced = true WHERE id = ANY($1::bigint[])", ids
        )
