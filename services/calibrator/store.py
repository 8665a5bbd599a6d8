"""The calibrator's PostgreSQL: its run queue, sets, artifacts and staged calibrators.

The calibrator is the one writer of ``calibration_runs``, ``calibration_sets``,
``calibration_artifacts`` and ``staged_calibrators``; it only reads ``predictions`` (the
recorder's), ``model_versions`` and ``calibration_requests`` (the gateway's).

Exactly once: a trigger becomes a ``pending`` run keyed by a deterministic run id (a
replayed alert finds its run and adds nothing); at most one run per model version waits,
and later triggers fold into its ``coalesced`` list. Claiming a run marks it ``running``;
everything a run produces is written in one transaction that also marks it ``done``, so a
worker killed mid-run leaves a ``running`` row that is put back to ``pending`` and redone,
never a half-recorded run. With several calibrator replicas, the claim also takes a
session-level advisory lock on the run (its lease) that the claiming replica holds until
the run is recorded: a ``running`` row is put back only once its lease is free, that is
once the replica that claimed it is gone (PostgreSQL drops a dead connection's locks), and
never while a sibling is still computing it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.recalibration.artifact import canonical
from shared.recalibration.sets import CalibrationSet, build_set

RUN_NAMESPACE = uuid.UUID("5b0c41a2-8f0e-4d6c-9e51-3c1b0cab1b15")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: int
    tenant: str
    name: str
    version: str
    stage: str
    calibrator_version: str
    calibrator: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    run_id: uuid.UUID
    model: ModelRow
    trigger: str
    trigger_detail: dict[str, Any]
    lease: asyncpg.Connection | None = None
    """The connection holding the run's lease until :meth:`CalibratorStore.release`."""


LEASE_SQL = "hashtextextended('calibrator-run/' || $1::uuid::text, 3)"


MODEL_COLUMNS = "id, tenant_id, name, version, stage, calibrator_version, calibrator::text"


def _model(row: asyncpg.Record) -> ModelRow:
    return ModelRow(
        row["id"], row["tenant_id"], row["name"], row["version"], row["stage"],
        row["calibrator_version"], row["calibrator"],
    )  # fmt: skip


_SET_ROWS = """
SELECT event_id, (extract(epoch FROM event_time) * 1000)::bigint AS event_time_ms,
       confidence, predicted_label, ground_truth, probabilities::text AS probabilities
FROM predictions
WHERE tenant_id = $1 AND model_name = $2 AND model_version = $3
  AND event_time >= $4 AND event_time < $5
  AND ground_truth IS NOT NULL AND (labeled_at IS NULL OR labeled_at <= $6)
  AND ($7::text IS NULL OR metadata->>'segment' = $7)
ORDER BY md5(event_id::text), event_id
LIMIT $8
"""
_SET_COUNT = """
SELECT count(*) FROM predictions
WHERE tenant_id = $1 AND model_name = $2 AND model_version = $3
  AND event_time >= $4 AND event_time < $5
  AND ground_truth IS NOT NULL AND (labeled_at IS NULL OR labeled_at <= $6)
  AND ($7::text IS NULL OR metadata->>'segment' = $7)
"""


async def load_set(
    conn: asyncpg.Connection,
    model: ModelRow,
    window_start_ms: int,
    window_end_ms: int,
    label_cutoff_ms: int,
    max_rows: int,
    segment: str | None = None,
) -> CalibrationSet:
    """The labeled predictions of a window; above ``max_rows`` a uniform sample chosen by
    the MD5 of the event id, so rebuilding the same window gives the same set."""
    args = (
        model.tenant, model.name, model.version, _dt(window_start_ms), _dt(window_end_ms),
        _dt(label_cutoff_ms), segment,
    )  # fmt: skip
    available = int(await conn.fetchval(_SET_COUNT, *args))
    rows = await conn.fetch(_SET_ROWS, *args, max_rows)
    parsed = [
        {**dict(r), "probabilities": json.loads(r["probabilities"]) if r["probabilities"] else None}
        for r in rows
    ]
    fields = {
        "tenant": model.tenant,
        "model_name": model.name,
        "model_version": model.version,
        "model_version_id": model.id,
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "label_cutoff_ms": label_cutoff_ms,
        "segment": segment,
    }
    return build_set(fields, parsed, available, max_rows)


async def load_reference(conn: asyncpg.Connection, model: ModelRow, rows: int) -> CalibrationSet:
    """The first ``rows`` labeled predictions of the version by event time: its reference."""
    first = await conn.fetch(
        "SELECT event_id, (extract(epoch FROM event_time) * 1000)::bigint AS event_time_ms, "
        "confidence, predicted_label, ground_truth, NULL::text AS probabilities "
        "FROM predictions WHERE tenant_id = $1 AND model_name = $2 AND model_version = $3 "
        "AND ground_truth IS NOT NULL ORDER BY event_time, event_id LIMIT $4",
        model.tenant, model.name, model.version, rows,
    )  # fmt: skip
    fields = {
        "tenant": model.tenant, "model_name": model.name, "model_version": model.version,
        "model_version_id": model.id, "window_start_ms": 0, "window_end_ms": 0,
        "label_cutoff_ms": 0,
    }  # fmt: skip
    parsed = [{**dict(r), "probabilities": None} for r in first]
    return build_set(fields, parsed, len(parsed), rows)


class CalibratorStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def model_by_key(self, tenant: str, name: str, version: str) -> ModelRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {MODEL_COLUMNS} FROM model_versions "
            "WHERE tenant_id = $1 AND name = $2 AND version = $3",
            tenant, name, version,
        )  # fmt: skip
        return None if row is None else _model(row)

    async def model_by_id(self, model_id: int) -> ModelRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {MODEL_COLUMNS} FROM model_versions WHERE id = $1", model_id
        )
        return None if row is None else _model(row)

    async def enqueue(
        self, run_id: uuid.UUID, model: ModelRow, trigger: str, detail: Mapping[str, Any]
    ) -> str:
        """Queue a run: ``queued``, ``coalesced`` into the waiting one, or ``known``."""
        entry = json.dumps([{"run_id": str(run_id), "trigger": trigger, **detail}])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
                f"calibrator/{model.tenant}/{model.id}",
            )
            known = await conn.fetchval(
                "SELECT 1 FROM calibration_runs WHERE run_id = $1 OR (tenant_id = $2 AND "
                "model_version_id = $3 AND coalesced @> $4::jsonb)",
                run_id, model.tenant, model.id, json.dumps([{"run_id": str(run_id)}]),
            )  # fmt: skip
            if known:
                return "known"
            folded = await conn.fetchval(
                "UPDATE calibration_runs SET coalesced = coalesced || $3::jsonb "
                "WHERE tenant_id = $1 AND model_version_id = $2 AND status = 'pending' "
                "RETURNING id",
                model.tenant, model.id, entry,
            )  # fmt: skip
            if folded is not None:
                return "coalesced"
            await conn.execute(
                "INSERT INTO calibration_runs (run_id, tenant_id, model_version_id, model_name, "
                "model_version, trigger, trigger_detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                run_id, model.tenant, model.id, model.name, model.version, trigger,
                json.dumps(dict(detail)),
            )  # fmt: skip
            return "queued"

    async def requeue_running(self) -> int:
        """Put runs a killed worker left ``running`` (their lease free) back in the queue."""
        async with self.pool.acquire() as conn, conn.transaction():
            running = await conn.fetch(
                "SELECT id, run_id, tenant_id, model_version_id FROM calibration_runs "
                "WHERE status = 'running' FOR UPDATE SKIP LOCKED"
            )
            rows = []
            for r in running:
                # Free only if the claiming replica's session is gone; held until commit.
                if await conn.fetchval(
                    f"SELECT pg_try_advisory_xact_lock({LEASE_SQL})", r["run_id"]
                ):
                    rows.append(r)
            for r in rows:
                # A trigger may wait behind it already: fold that run into this one.
                waiting = await conn.fetchrow(
                    "DELETE FROM calibration_runs WHERE tenant_id = $1 AND model_version_id = $2 "
                    "AND status = 'pending' RETURNING run_id, trigger, trigger_detail::text AS d, "
                    "coalesced::text AS c",
                    r["tenant_id"], r["model_version_id"],
                )  # fmt: skip
                extra: list[Any] = []
                if waiting is not None:
                    own = {"run_id": str(waiting["run_id"]), "trigger": waiting["trigger"]}
                    extra = [{**json.loads(waiting["d"]), **own}, *json.loads(waiting["c"])]
                await conn.execute(
                    "UPDATE calibration_runs SET status = 'pending', "
                    "coalesced = coalesced || $2::jsonb WHERE id = $1",
                    r["id"], json.dumps(extra),
                )  # fmt: skip
            return len(rows)

    async def claim(self) -> Claimed | None:
        """The oldest waiting run whose model version has none running, marked running and
        leased (release it with :meth:`release` once the run is recorded)."""
        conn = await self.pool.acquire()
        try:
            claimed = await self._claim(conn)
        except BaseException:
            await self.pool.release(conn)
            raise
        if claimed is None:
            await self.pool.release(conn)
        return claimed

    async def release(self, claimed: Claimed) -> None:
        if claimed.lease is None:
            return
        try:
            await claimed.lease.execute(f"SELECT pg_advisory_unlock({LEASE_SQL})", claimed.run_id)
        finally:
            await self.pool.release(claimed.lease)

    async def _claim(self, conn: asyncpg.Connection) -> Claimed | None:
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE calibration_runs SET status = 'running', started_at = now(), "
                "attempts = attempts + 1 WHERE id = (SELECT r.id FROM calibration_runs r "
                "WHERE r.status = 'pending' AND NOT EXISTS (SELECT 1 FROM calibration_runs o "
                "WHERE o.status = 'running' AND o.tenant_id = r.tenant_id AND "
                "o.model_version_id = r.model_version_id) ORDER BY r.id LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) RETURNING run_id, model_version_id, trigger, "
                "trigger_detail::text AS detail"
            )
            if row is None:
                return None
            # The lease is taken before the claim commits: no one sees it running unleased.
            await conn.execute(f"SELECT pg_advisory_lock({LEASE_SQL})", row["run_id"])
            model = await conn.fetchrow(
                f"SELECT {MODEL_COLUMNS} FROM model_versions WHERE id = $1",
                row["model_version_id"],
            )
        return Claimed(
            row["run_id"], _model(model), row["trigger"], json.loads(row["detail"]), conn
        )

    async def record(
        self,
        run_id: uuid.UUID,
        cal: CalibrationSet | None,
        outcome_verdict: str,
        reason: str,
        advice: str | None,
        result: Mapping[str, Any],
        artifact: Mapping[str, Any] | None,
        artifact_version: str | None,
        model: ModelRow,
    ) -> None:
        """Everything a run produced, and its ``done``, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            if cal is not None:
                await conn.execute(
                    "INSERT INTO calibration_sets (hash, tenant_id, model_version_id, manifest, "
                    "rows_blob) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
                    cal.hash, model.tenant, model.id, json.dumps(cal.manifest.to_json()),
                    cal.compressed_rows(),
                )  # fmt: skip
            if artifact is not None and artifact_version is not None and cal is not None:
                await conn.execute(
                    "INSERT INTO calibration_artifacts (tenant_id, version, model_version_id, "
                    "kind, artifact, set_hash) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT (tenant_id, version) DO NOTHING",
                    model.tenant, artifact_version, model.id, artifact["kind"],
                    canonical(artifact).decode(), cal.hash,
                )  # fmt: skip
            done = await conn.fetchval(
                "UPDATE calibration_runs SET status = 'done', verdict = $2, reason = $3, "
                "advice = $4, result = $5, set_hash = $6, artifact_version = $7, "
                "finished_at = now() WHERE run_id = $1 AND status = 'running' RETURNING id",
                run_id, outcome_verdict, reason, advice, json.dumps(result),
                None if cal is None else cal.hash, artifact_version,
            )  # fmt: skip
            if done is None:
                raise RuntimeError(f"run {run_id} is no longer running; not recording it")
            if outcome_verdict == "staged":
                await conn.execute(
                    "INSERT INTO staged_calibrators (tenant_id, model_version_id, "
                    "artifact_version, run_id) VALUES ($1, $2, $3, $4) ON CONFLICT "
                    "(tenant_id, model_version_id) DO UPDATE SET artifact_version = "
                    "excluded.artifact_version, run_id = excluded.run_id, staged_at = now()",
                    model.tenant, model.id, artifact_version, run_id,
                )  # fmt: skip

    async def unannounced(self) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT run_id, tenant_id, model_version_id, model_name, model_version, "
                "trigger, verdict, reason, advice, set_hash, artifact_version, "
                "result::text AS result, finished_at FROM calibration_runs "
                "WHERE status = 'done' AND NOT announced ORDER BY id LIMIT 100"
            )
        )

    async def mark_announced(self, run_ids: list[uuid.UUID]) -> None:
        await self.pool.execute(
            "UPDATE calibration_runs SET announced = true WHERE run_id = ANY($1::uuid[])", run_ids
        )

    async def requests(self) -> list[asyncpg.Record]:
        """Manual requests from the gateway not yet turned into (or folded into) a run."""
        return list(
            await self.pool.fetch(
                "SELECT q.run_id, q.model_version_id, q.methods, q.window_seconds "
                "FROM calibration_requests q WHERE NOT EXISTS (SELECT 1 FROM calibration_runs r "
                "WHERE r.run_id = q.run_id) AND NOT EXISTS (SELECT 1 FROM calibration_runs r "
                "WHERE r.tenant_id = q.tenant_id AND r.model_version_id = q.model_version_id "
                "AND r.coalesced @> jsonb_build_array(jsonb_build_object('run_id', "
                "q.run_id::text))) ORDER BY q.requested_at LIMIT 100"
            )
        )

    async def due(
        self, schedule_seconds: float, on_promotion: bool, min_labeled: int = 0
    ) -> list[tuple[ModelRow, str, dict[str, Any]]]:
        """Model versions a schedule or a promotion asks to run now.

        A promotion waits until the version has ``min_labeled`` labeled predictions (a run
        before that could only fail for too few rows)."""
        out: list[tuple[ModelRow, str, dict[str, Any]]] = []
        if schedule_seconds > 0:
            rows = await self.pool.fetch(
                f"SELECT {MODEL_COLUMNS}, (SELECT max(requested_at) FROM calibration_runs r "
                "WHERE r.model_version_id = m.id) AS last FROM model_versions m "
                "WHERE stage IN ('staging', 'production') AND created_at < now() - "
                "make_interval(secs => $1) AND NOT EXISTS (SELECT 1 FROM calibration_runs r "
                "WHERE r.model_version_id = m.id AND r.requested_at >= now() - "
                "make_interval(secs => $1))",
                schedule_seconds,
            )
            for r in rows:
                slot = int(datetime.now(UTC).timestamp() // schedule_seconds)
                out.append((_model(r), "schedule", {"slot": slot}))
        if on_promotion:
            rows = await self.pool.fetch(
                f"SELECT {MODEL_COLUMNS} FROM model_versions m WHERE stage IN "
                "('staging', 'production') AND NOT EXISTS (SELECT 1 FROM calibration_runs r "
                "WHERE r.model_version_id = m.id AND (r.trigger_detail->>'stage' = m.stage AND "
                "r.trigger = 'promoted' OR r.coalesced @> jsonb_build_array("
                "jsonb_build_object('trigger', 'promoted', 'stage', m.stage)))) AND "
                "(SELECT count(*) FROM (SELECT 1 FROM predictions p WHERE p.tenant_id = "
                "m.tenant_id AND p.model_name = m.name AND p.model_version = m.version AND "
                "p.ground_truth IS NOT NULL LIMIT $1) enough) >= $1",
                min_labeled,
            )
            out += [(_model(r), "promoted", {"stage": r["stage"]}) for r in rows]
        return out


def trigger_run_id(
    tenant: str, model_id: int, trigger: str, detail: Mapping[str, Any]
) -> uuid.UUID:
    """A run id that a replay of the same trigger finds again."""
    key = json.dumps({"t": tenant, "m": model_id, "trigger": trigger, **detail}, sort_keys=True)
    return uuid.uuid5(RUN_NAMESPACE, key)


def now_ms() -> int:
    return _ms(datetime.now(UTC))
