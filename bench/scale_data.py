"""A large PostgreSQL store, filled server-side: predictions and labels waiting for theirs.

:func:`preload` fills a migrated database with ``n`` predictions of one model version and
``m`` pending labels in a few statements (``generate_series``; nothing crosses the wire),
with the prediction table's indexes dropped during the fill and rebuilt after it (one
sorted build per index instead of ``n`` random insertions), then ``ANALYZE``. Event ids are
derived from integers, so a benchmark can name the events it loaded:
:func:`prediction_id` for the ``i``-th prediction and :func:`pending_id` for the ``j``-th
waiting label (whose prediction is not stored yet).

Half the loaded predictions are labelled (the older half), a tenth of them were withheld
for review, as a store that has run for a while looks.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

TENANT = "default"
MODEL = "scale"
VERSION = "v1"
CLASSES = ("cat", "dog", "bird")
START_MS = 1_767_225_600_000  # 2026-01-01, one prediction per 10 ms from there


def prediction_id(i: int) -> str:
    """The event id of the ``i``-th loaded prediction (1-based)."""
    return str(uuid.UUID(hashlib.md5(f"p{i}".encode()).hexdigest()))


def pending_id(j: int) -> str:
    """The event id of the ``j``-th loaded waiting label (1-based)."""
    return str(uuid.UUID(hashlib.md5(f"q{j}".encode()).hexdigest()))


@dataclass(frozen=True, slots=True)
class Loaded:
    predictions: int
    pending: int
    seconds: float
    database_bytes: int


_PREDICTIONS = """
INSERT INTO predictions (
    event_id, tenant_id, model_name, model_version, event_time, predicted_label,
    confidence, calibrated_confidence, threshold, calibrator_version, status, ground_truth,
    correct, label_source, labeled_at, probabilities, features, decided_at, created_at,
    decision, review_state, resolved_by, resolved_at)
SELECT md5('p' || i)::uuid, %(tenant)s, %(model)s, %(version)s, t, lab, c, c, 0.7,
       'identity',
       CASE WHEN c >= 0.7 THEN 'auto' WHEN labelled THEN 'resolved' ELSE 'review' END,
       CASE WHEN labelled THEN truth END,
       CASE WHEN labelled THEN truth = lab END,
       CASE WHEN labelled THEN 'feed' END,
       CASE WHEN labelled THEN t + INTERVAL '1 hour' END,
       jsonb_build_object(lab, c),
       jsonb_build_object('f0', round(c::numeric, 3), 'f1', i %% 97, 'color', lab),
       t, t,
       CASE WHEN c >= 0.7 THEN 'auto' ELSE 'review' END,
       CASE WHEN c >= 0.7 THEN 'none' WHEN labelled THEN 'resolved' ELSE 'open' END,
       CASE WHEN c < 0.7 AND labelled THEN 'feed' END,
       CASE WHEN c < 0.7 AND labelled THEN t + INTERVAL '1 hour' END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT TIMESTAMPTZ 'epoch' + (%(start)s + i * 10) * INTERVAL '1 millisecond' AS t,
                     (ARRAY['cat', 'dog', 'bird'])[1 + i %% 3] AS lab,
                     (ARRAY['cat', 'dog', 'bird'])[1 + (i / 7) %% 3] AS truth,
                     -- 0.6 .. 1.0, a tenth below the 0.7 threshold
                     0.6 + ((i::bigint * 7919) %% 1000) / 2500.0 AS c,
                     i <= %(n)s / 2 AS labelled) AS v
"""

_PENDING = """
INSERT INTO pending_labels (event_id, tenant_id, ground_truth, source, label_time)
SELECT md5('q' || j)::uuid, %(tenant)s, (ARRAY['cat', 'dog', 'bird'])[1 + j %% 3], 'feed',
       TIMESTAMPTZ 'epoch' + (%(start)s + j * 10) * INTERVAL '1 millisecond'
FROM generate_series(1, %(m)s) AS j
"""


def _indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the prediction table's indexes but its primary key."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'predictions' "
        "AND indexname <> 'predictions_pkey'"
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def preload(dsn: str, n: int, m: int) -> Loaded:
    """Fill the migrated database at ``dsn`` (expected empty) with ``n`` predictions and
    ``m`` labels waiting for their predictions; report how long it took."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        indexes = _indexes(conn)
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute("ALTER TABLE predictions DROP CONSTRAINT predictions_pkey")
        args = {"tenant": TENANT, "model": MODEL, "version": VERSION, "start": START_MS}
        conn.execute(_PREDICTIONS, {**args, "n": n})
        conn.execute(_PENDING, {**args, "m": m})
        conn.execute("ALTER TABLE predictions ADD PRIMARY KEY (tenant_id, event_id)")
        for _, definition in indexes:
            conn.execute(definition.encode())
        conn.execute("VACUUM ANALYZE predictions")
        conn.execute("VACUUM ANALYZE pending_labels")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return Loaded(n, m, time.monotonic() - started, int(size[0]) if size else 0)
