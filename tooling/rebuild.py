"""Rebuild PostgreSQL or Redis from the Kafka log.

Both rebuilds read the topics from their first retained record to where they ended when the
rebuild began (:class:`tooling.log_reader.LogReader`) and hand each batch to the workers' own
processing code, so a rebuilt store holds what the workers would have written:

- **PostgreSQL** — the registry from the compacted ``model-updates`` (ids as they were, the
  id sequence moved past the largest, so no id is ever given again), then predictions,
  labels and alerts through the recorder's processor (idempotent writes keyed by event id
  and alert id: a second run, or a run after one killed half-way, changes nothing), and the
  review resolutions from the labels whose source is ``review``.
- **Redis** — the key space is emptied first, then ingest's dedupe claims (from
  ``predictions`` and ``labels``), the aggregator's windows and join state (its processor,
  fenced by offset), the drift worker's histograms and reference profiles (its processor)
  and both workers' alert states (from ``alerts``). Starting from an empty key space makes
  every run exact, whether the last one finished or was killed; and the identity is written
  only at the end, so services refuse a half-rebuilt Redis.

At the end the stack's generation moves forward (:func:`shared.runtime.identity.advance`).
Services must be stopped while a store is rebuilt (``caliber services stop``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from confluent_kafka import KafkaException, Message
from prometheus_client import CollectorRegistry

from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.processing import AggregatorProcessor
from services.aggregator.store import AggregatorStore
from services.drift.metrics import DriftMetrics
from services.drift.processing import DriftProcessor, ProfileCache, WindowConfig
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore
from services.ingest.dedupe import Claim, Deduper
from services.recorder.processing import RecorderProcessor
from shared.contracts.batches import LabelColumns, PredictionColumns, model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.db import migrate
from shared.runtime import identity, redis_client
from shared.runtime.kafka import make_admin
from shared.settings import Settings
from shared.windows.calibration import alert_key
from shared.windows.drift import DriftKeys
from tooling.benchmarking import delete_redis_prefix
from tooling.log_reader import LogReader, Progress

Report = Callable[[Progress, int], None]
"""Called about once a second with the read's progress and the events processed so far."""


@dataclass(slots=True)
class Rebuilt:
    store: str
    events: int = 0
    records: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    truncated: list[str] = field(default_factory=list)
    """Partitions whose first retained offset is above 0 (retention removed their start)."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


WRITERS = {"postgres": ("recorder",), "redis": ("ingest", "aggregator", "drift")}
"""The workers that write each store (their consumer groups are ``<ns>-<worker>``)."""


def running_writers(settings: Settings, store: str) -> list[str]:
    """The workers of ``store`` whose consumer group has members: a rebuild beside a running
    writer would race it, so the CLI refuses to start."""
    admin = make_admin(settings)
    groups = [f"{settings.topic_namespace}-{w}" for w in WRITERS[store]]
    busy = []
    for group, future in admin.describe_consumer_groups(groups, request_timeout=10).items():
        try:
            if future.result().members:
                busy.append(group)
        except KafkaException:
            continue  # no such group: nothing runs
    return busy


def _events(codec: AvroCodec, m: Message) -> tuple[str, dict[str, Any]] | None:
    decoded = codec.decode(m.value())
    return (decoded.name, decoded.record) if isinstance(decoded, Decoded) else None


def _batch_len(name: str, rec: dict[str, Any]) -> int:
    if name == "DecisionBatch":
        return len(rec["predictions"]["event_ids"])
    if name in ("PredictionBatch", "LabelBatch"):
        return len(rec["event_ids"])
    return 1


def _truncated(reader: LogReader) -> list[str]:
    return [f"{t}:{p}" for (t, p), low in sorted(reader.earliest.items()) if low > 0]


class _Ticker:
    def __init__(self, report: Report | None, every: float) -> None:
        self._report = report
        self._every = every
        self._last = 0.0

    def __call__(self, progress: Progress, events: int, force: bool = False) -> None:
        if self._report and (force or time.monotonic() - self._last >= self._every):
            self._last = time.monotonic()
            self._report(progress, events)


# --- PostgreSQL ---------------------------------------------------------------------------


UPSERT_TENANT = "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING"
UPSERT_MODEL = """
INSERT INTO model_versions (id, tenant_id, name, version, stage, parent_id, abstain_threshold,
    calibrator_version, calibrator, created_at, updated_at, candidate_version,
    candidate_calibrator, rollout_stage, canary_share, segment_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb,
    TIMESTAMPTZ 'epoch' + $10 * INTERVAL '1 millisecond',
    TIMESTAMPTZ 'epoch' + $11 * INTERVAL '1 millisecond', $12, $13::jsonb, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET stage = EXCLUDED.stage, parent_id = EXCLUDED.parent_id,
    abstain_threshold = EXCLUDED.abstain_threshold,
    calibrator_version = EXCLUDED.calibrator_version, calibrator = EXCLUDED.calibrator,
    updated_at = EXCLUDED.updated_at, candidate_version = EXCLUDED.candidate_version,
    candidate_calibrator = EXCLUDED.candidate_calibrator,
    rollout_stage = EXCLUDED.rollout_stage, canary_share = EXCLUDED.canary_share,
    segment_key = EXCLUDED.segment_key
"""
# Never back: the next id is past every id the registry ever gave (and the log still shows).
MOVE_SEQUENCE = """
SELECT setval('model_versions_id_seq', GREATEST(
    $1::bigint,
    (SELECT COALESCE(max(id), 1) FROM model_versions),
    (SELECT last_value FROM model_versions_id_seq)))
"""
INSERT_RESOLUTIONS = """
INSERT INTO review_resolutions (event_id, tenant_id, ground_truth, resolved_at)
SELECT e, t, g, TIMESTAMPTZ 'epoch' + ms * INTERVAL '1 millisecond'
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[]) AS r(e, t, g, ms)
ON CONFLICT DO NOTHING
"""
COUNTS = {
    "model versions": "SELECT count(*) FROM model_versions",
    "predictions": "SELECT count(*) FROM predictions",
    "labeled": "SELECT count(*) FROM predictions WHERE ground_truth IS NOT NULL",
    "review queue": "SELECT count(*) FROM predictions WHERE status = 'review'",
    "review resolutions": "SELECT count(*) FROM review_resolutions",
    "pending labels": "SELECT count(*) FROM pending_labels",
    "alerts": "SELECT count(*) FROM alerts",
}


async def _registry(conn: asyncpg.Connection, codec: AvroCodec, settings: Settings) -> int:
    topics = Topics.for_namespace(settings.topic_namespace)
    latest: dict[bytes, dict[str, Any] | None] = {}
    highest = 1
    for batch in LogReader(settings, [topics.model_updates]).batches():
        for m in batch:
            key = bytes(m.key() or b"")
            if m.value() is None:
                latest[key] = None  # a tombstone removes the version
                continue
            found = _events(codec, m)
            if found is not None and found[0] == "ModelVersion":
                latest[key] = found[1]
                highest = max(highest, int(found[1]["id"]))
    rows = sorted((r for r in latest.values() if r is not None), key=lambda r: int(r["id"]))
    async with conn.transaction():
        for r in rows:
            await conn.execute(UPSERT_TENANT, r["tenant"])
        for r in rows:
            await conn.execute(
                UPSERT_MODEL,
                int(r["id"]),
                r["tenant"],
                r["name"],
                r["version"],
                r["stage"],
                r["parent_id"],
                float(r["abstain_threshold"]),
                r["calibrator_version"],
                r["calibrator"],
                int(r["created_at_ms"]),
                int(r["updated_at_ms"]),
                r.get("candidate_version"),
                r.get("candidate_calibrator"),
                r.get("rollout_stage"),
                float(r.get("canary_share") or 0.0),
                r.get("segment_key"),
            )
        await conn.execute(MOVE_SEQUENCE, highest)
    return len(rows)


async def rebuild_postgres(
    settings: Settings,
    report: Report | None = None,
    report_every: float = 1.0,
    batch_records: int = 500,
) -> Rebuilt:
    migrate(settings.postgres_url)
    codec = AvroCodec()
    topics = Topics.for_namespace(settings.topic_namespace)
    out = Rebuilt("postgres")
    started = time.monotonic()
    pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await _registry(conn, codec, settings)
        recorder = RecorderProcessor(topics, codec, pool)
        reader = LogReader(
            settings, [topics.decisions, topics.labels, topics.alerts], batch_records
        )
        tick = _Ticker(report, report_every)
        for batch in reader.batches():
            reviews: tuple[list[str], list[str], list[str], list[int]] = ([], [], [], [])
            for m in batch:
                found = _events(codec, m)
                if found is None:
                    continue
                out.events += _batch_len(*found)
                if found[0] == "LabelBatch":
                    cols = LabelColumns.from_record(found[1])
                    times = cols.label_time_ms.tolist()
                    for i, source in enumerate(cols.sources):
                        if source == "review":
                            reviews[0].append(cols.event_ids[i])
                            reviews[1].append(cols.tenant)
                            reviews[2].append(cols.ground_truths[i])
                            reviews[3].append(int(times[i]))
            await recorder(batch)
            if reviews[0]:
                await pool.execute(INSERT_RESOLUTIONS, *reviews)
            tick(reader.progress, out.events)
        tick(reader.progress, out.events, force=True)
        out.records = reader.progress.records
        out.truncated = _truncated(reader)
        async with pool.acquire() as conn:
            out.counts = {name: int(await conn.fetchval(q)) for name, q in COUNTS.items()}
    finally:
        await pool.close()
    out.generation = identity.advance(settings, "postgres").generation
    out.seconds = time.monotonic() - started
    return out


# --- Redis --------------------------------------------------------------------------------


def _alert_state_keys(settings: Settings, rec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The alert-state key of the worker that raised ``rec``, and the state it implies."""
    model = model_key(rec["tenant"], rec["model_name"], rec["model_version"])
    active = rec["severity"] != "resolved"
    at = int(rec["created_at_ms"])
    if rec["kind"] == "drift":
        if not rec.get("feature"):
            return None
        key = DriftKeys(settings.redis_prefix).alert(model, rec["feature"])
        state = {
            "active": active,
            "since": at,
            "cleared": None if active else at,
            "severity": rec["severity"] if active else None,
        }
        return key, state
    key = alert_key(f"{settings.redis_prefix}agg:", model, rec["metric"])
    state = {"active": active, "since": at, "cleared": 0 if active else at}
    if active:
        state["severity"] = rec["severity"]
    return key, state


async def rebuild_redis(
    settings: DriftSettings,
    report: Report | None = None,
    report_every: float = 1.0,
    batch_records: int = 500,
) -> Rebuilt:
    codec = AvroCodec()
    topics = Topics.for_namespace(settings.topic_namespace)
    out = Rebuilt("redis")
    started = time.monotonic()
    delete_redis_prefix(settings)  # also the identity: a half-rebuilt Redis is refused
    client = redis_client.async_client(settings.redis_dsn)
    try:
        deduper = Deduper(client, settings.redis_prefix, settings.label_horizon_seconds)
        aggregator = AggregatorProcessor(
            topics,
            codec,
            AggregatorStore(
                client,
                settings.redis_prefix,
                settings.label_horizon_seconds,
                segment_cap=settings.segment_max_per_version,
            ),
            AggregatorMetrics(CollectorRegistry()),
        )
        drift = DriftProcessor(
            topics,
            codec,
            DriftStore(client, settings.redis_prefix),
            ProfileCache(),
            WindowConfig(
                bucket_seconds=settings.drift_bucket_seconds,
                window_seconds=settings.drift_window_seconds,
                reference_events=settings.drift_reference_events,
                reference_ttl=settings.label_horizon_seconds,
            ),
            DriftMetrics(CollectorRegistry()),
        )
        reader = LogReader(
            settings,
            [topics.predictions, topics.decisions, topics.labels, topics.alerts],
            batch_records,
        )
        tick = _Ticker(report, report_every)
        alert_states: dict[str, dict[str, Any]] = {}
        claims = {"seen": 0, "label": 0}
        for batch in reader.batches():
            seen: list[Claim] = []
            labels: list[Claim] = []
            windows: list[Message] = []
            predictions: list[Message] = []
            for m in batch:
                topic = str(m.topic())
                found = _events(codec, m)
                if found is None:
                    continue
                name, rec = found
                out.events += _batch_len(name, rec)
                position = f"rebuild:{topic}:{m.partition()}:{m.offset()}"
                if topic == topics.predictions and name == "PredictionBatch":
                    predictions.append(m)
                    cols = PredictionColumns.from_record(rec)
                    times = cols.event_time_ms.tolist()
                    seen.extend(
                        Claim(cols.tenant, e, position, cols.key, int(t))
                        for e, t in zip(cols.event_ids, times, strict=True)
                    )
                elif topic == topics.labels and name == "LabelBatch":
                    windows.append(m)
                    lcols = LabelColumns.from_record(rec)
                    labels.extend(Claim(lcols.tenant, e, position) for e in lcols.event_ids)
                elif topic == topics.decisions:
                    windows.append(m)
                elif topic == topics.alerts and name == "Alert":
                    state = _alert_state_keys(settings, rec)
                    if state is not None:
                        alert_states[state[0]] = state[1]
            claims["seen"] += sum(await deduper.claim("seen", seen))
            claims["label"] += sum(await deduper.claim("label", labels))
            if windows:
                await aggregator(windows)
            if predictions:
                await drift(predictions)
            tick(reader.progress, out.events)
        tick(reader.progress, out.events, force=True)
        if alert_states:
            await redis_client.mset(client, {k: json.dumps(v) for k, v in alert_states.items()})
        out.records = reader.progress.records
        out.truncated = _truncated(reader)
        out.counts = {
            "prediction ids (dedupe)": claims["seen"],
            "label ids (dedupe)": claims["label"],
            "model versions (windows)": int(
                await client.scard(f"{settings.redis_prefix}agg:models")
            ),
            "alert states": len(alert_states),
        }
    finally:
        await client.aclose()
    out.generation = identity.advance(settings, "redis").generation
    out.seconds = time.monotonic() - started
    return out


def redis_key_count(settings: Settings) -> int:
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
    finally:
        client.close()
