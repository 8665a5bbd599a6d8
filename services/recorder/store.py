"""Idempotent, batched writes of decisions, labels and alerts.

Each statement takes whole columns (``unnest`` of arrays) of at most
:data:`STATEMENT_ROWS` rows, so a consumed batch costs one statement per kind of record per
slice, and each statement reaches the tables by key probes whatever their size. Every
value written comes from the messages, timestamps included (never ``now()``), so a replay
changes no byte:
predictions and alerts are inserted ``ON CONFLICT DO NOTHING``; a label only fills a
prediction that has none (the first label of an event wins); the policy's ``decision``
(auto | review) is written once and never changes, and a label closes the review of a
withheld prediction (``review_state`` open → resolved, ``status`` review → resolved, by the
label's source, with the reviewer's key when a review resolution exists), never back, while
an auto prediction keeps ``status`` auto and ``review_state`` none; a label whose
prediction has not arrived waits in ``pending_labels`` and is applied, and removed, when
the decision lands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import numpy as np
import orjson

from shared.contracts.batches import DecisionColumns, LabelColumns

# Epoch milliseconds → timestamptz, exactly (integer milliseconds times an interval).
_MS = "(TIMESTAMPTZ 'epoch' + ({} * INTERVAL '1 millisecond'))"
T = TypeVar("T")


@dataclass(slots=True)
class Written:
    """Rows changed by one write: inserted predictions, labelled predictions (directly or
    from pending labels), labels kept pending, pending labels consumed, inserted alerts."""

    predictions: int = 0
    labelled: int = 0
    pending: int = 0
    pending_applied: int = 0
    alerts: int = 0

    def add(self, other: Written) -> None:
        self.predictions += other.predictions
        self.labelled += other.labelled
        self.pending += other.pending
        self.pending_applied += other.pending_applied
        self.alerts += other.alerts


# A label fills a prediction of the same tenant that has none; it closes the review of a
# withheld prediction, and leaves an auto prediction's status and review state alone.
_LABEL_SET = """
SET ground_truth = l.ground_truth,
    correct = (l.ground_truth = p.predicted_label),
    label_source = l.source,
    labeled_at = l.label_time,
    status = CASE WHEN p.decision = 'review' THEN 'resolved' ELSE p.status END,
    review_state = CASE WHEN p.decision = 'review' THEN 'resolved' ELSE p.review_state END,
    resolved_by = CASE WHEN p.decision = 'review' THEN l.source END,
    reviewer_key_id = CASE WHEN p.decision = 'review' AND l.source = 'review' THEN
        (SELECT r.api_key_id FROM review_resolutions r
         WHERE r.tenant_id = p.tenant_id AND r.event_id = p.event_id) END,
    resolved_at = CASE WHEN p.decision = 'review' THEN COALESCE(p.resolved_at, l.label_time) END
"""

# The same rule for a prediction inserted with the label that waited for it (w, NULL when
# none did): a withheld decision is resolved at once, an auto one stays auto.
_REVIEW = "d.status = 'review'"
_LABELLED = "w.event_id IS NOT NULL"


def _insert_decisions(on_conflict: str) -> str:
    return f"""
WITH d AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
        $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::text[],
        $12::text[], $13::jsonb[], $14::jsonb[], $15::float8[], $16::jsonb[], $17::bigint[])
        WITH ORDINALITY AS d(
            event_id, tenant_id, model_name, model_version, model_version_id, event_ms,
            predicted_label, confidence, calibrated, threshold, calibrator_version,
            status, probabilities, features, uncertainty, metadata, decided_ms, ord)
), waiting AS (
    DELETE FROM pending_labels AS g USING d
    WHERE g.tenant_id = d.tenant_id AND g.event_id = d.event_id
    RETURNING g.event_id, g.tenant_id, g.ground_truth, g.source, g.label_time
), inserted AS (
    INSERT INTO predictions (
        event_id, tenant_id, model_name, model_version, model_version_id, event_time,
        predicted_label, confidence, calibrated_confidence, threshold, calibrator_version,
        status, probabilities, features, uncertainty, metadata, decided_at, created_at,
        decision, review_state, ground_truth, correct, label_source, labeled_at,
        resolved_by, reviewer_key_id, resolved_at)
    SELECT d.event_id, d.tenant_id, d.model_name, d.model_version, d.model_version_id,
           {_MS.format("d.event_ms")}, d.predicted_label, d.confidence, d.calibrated,
           d.threshold, d.calibrator_version,
           CASE WHEN {_REVIEW} AND {_LABELLED} THEN 'resolved' ELSE d.status END,
           d.probabilities, d.features, d.uncertainty, d.metadata,
           {_MS.format("d.decided_ms")}, {_MS.format("d.decided_ms")}, d.status,
           CASE WHEN NOT {_REVIEW} THEN 'none' WHEN {_LABELLED} THEN 'resolved' ELSE 'open' END,
           w.ground_truth, w.ground_truth = d.predicted_label, w.source, w.label_time,
           CASE WHEN {_REVIEW} THEN w.source END,
           CASE WHEN {_REVIEW} AND w.source = 'review' THEN
               (SELECT r.api_key_id FROM review_resolutions r
                WHERE r.tenant_id = d.tenant_id AND r.event_id = d.event_id) END,
           CASE WHEN {_REVIEW} THEN w.label_time END
    FROM d LEFT JOIN waiting AS w ON w.tenant_id = d.tenant_id AND w.event_id = d.event_id
    ORDER BY d.ord
    {on_conflict}
    RETURNING ground_truth IS NOT NULL AS labelled
), applied AS (
    -- A waiting label of a prediction stored before this statement (the statement's own
    -- inserts are not visible here): applied as a label arriving now would be.
    UPDATE predictions AS p {_LABEL_SET}
    FROM waiting AS l
    WHERE p.event_id = l.event_id AND p.tenant_id = l.tenant_id AND p.ground_truth IS NULL
    RETURNING p.event_id
)
SELECT (SELECT count(*) FROM inserted),
       (SELECT count(*) FILTER (WHERE labelled) FROM inserted) + (SELECT count(*) FROM applied),
       (SELECT count(*) FROM waiting)
"""


INSERT_DECISIONS = _insert_decisions("ON CONFLICT (tenant_id, event_id) DO NOTHING")
"""Decisions, with the labels that waited for them: each waiting label is removed and
written into its prediction's row as it is inserted (one row version, where inserting and
then labelling wrote two, the second on a page the inserts had just filled). Keyed probes
only: one of ``pending_labels_pkey`` and one of ``predictions_pkey`` per decision. A
decision stored already (a batch replayed after a crash) is skipped."""

INSERT_NEW_DECISIONS = _insert_decisions("")
""":data:`INSERT_DECISIONS` for decisions none of which is stored yet (every batch but a
replay): without ``ON CONFLICT`` PostgreSQL neither probes ``predictions_pkey`` before each
insert (the insert itself checks the key) nor writes a speculative insertion's
confirmation, about 14 % of its time for the recorder at 10,000 events/s. A decision
stored already makes it fail with a unique violation, and the caller writes the batch again
with :data:`INSERT_DECISIONS`."""

WRITE_LABELS = f"""
WITH l AS (
    SELECT DISTINCT ON (u.tenant_id, u.event_id)
           u.event_id, u.tenant_id, u.ground_truth, u.source,
           {_MS.format("u.label_ms")} AS label_time
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
        WITH ORDINALITY AS u(event_id, tenant_id, ground_truth, source, label_ms, ord)
    ORDER BY u.tenant_id, u.event_id, u.ord
), applied AS (
    UPDATE predictions AS p {_LABEL_SET}
    FROM l
    WHERE p.event_id = l.event_id AND p.tenant_id = l.tenant_id AND p.ground_truth IS NULL
    RETURNING p.event_id, p.tenant_id
), unapplied AS MATERIALIZED (
    -- Only a label not applied can lack its prediction: the others skip that probe.
    SELECT l.* FROM l
    WHERE NOT EXISTS (
        SELECT 1 FROM applied a WHERE a.tenant_id = l.tenant_id AND a.event_id = l.event_id)
), kept AS (
    INSERT INTO pending_labels (event_id, tenant_id, ground_truth, source, label_time)
    SELECT l.event_id, l.tenant_id, l.ground_truth, l.source, l.label_time FROM unapplied l
    WHERE NOT EXISTS (
        SELECT 1 FROM predictions p WHERE p.tenant_id = l.tenant_id AND p.event_id = l.event_id)
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING event_id
)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM kept)
"""
"""The first label of each event in the batch: applied to its prediction, or kept pending."""

INSERT_ALERTS = f"""
INSERT INTO alerts (
    alert_id, tenant_id, kind, severity, model_name, model_version, model_version_id,
    metric, feature, method, value, threshold, window_name, reference_version, n_samples,
    created_at, payload)
SELECT a.alert_id, a.tenant_id, a.kind, a.severity, a.model_name, a.model_version,
       a.model_version_id, a.metric, a.feature, a.method, a.value, a.threshold,
       a.window_name, a.reference_version, a.n_samples, {_MS.format("a.created_ms")},
       a.payload
FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
    $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::text[],
    $14::text[], $15::bigint[], $16::bigint[], $17::jsonb[])
    WITH ORDINALITY AS a(
        alert_id, tenant_id, kind, severity, model_name, model_version, model_version_id,
        metric, feature, method, value, threshold, window_name, reference_version,
        n_samples, created_ms, payload, ord)
ORDER BY a.ord
ON CONFLICT (alert_id) DO NOTHING
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def _features(d: DecisionColumns) -> list[str | None]:
    """One JSON object per row; NaN (number) and "" (category) mean the event had none."""
    p = d.predictions
    rows: list[dict[str, Any]] = [{} for _ in range(len(p))]
    for name, values in p.numeric_features.items():
        for row, v in zip(rows, values.tolist(), strict=True):
            if v == v:
                row[name] = v
    for name, cats in p.categorical_features.items():
        for row, c in zip(rows, cats, strict=True):
            if c:
                row[name] = c
    return [orjson.dumps(r).decode() if r else None for r in rows]


def _probabilities(d: DecisionColumns) -> list[str | None]:
    p = d.predictions
    if p.probabilities is None:
        return [None] * len(p)
    labels = p.class_labels
    return [
        orjson.dumps(dict(zip(labels, row, strict=True))).decode()
        if row and row[0] == row[0]
        else None
        for row in p.probabilities.tolist()
    ]


def decision_columns(decisions: Sequence[DecisionColumns]) -> list[list[Any]]:
    """The 17 parameter arrays of :data:`INSERT_DECISIONS`, all decisions concatenated."""
    cols: list[list[Any]] = [[] for _ in range(17)]
    for d in decisions:
        p = d.predictions
        n = len(p)
        uncertainties = (
            [None] * n
            if p.uncertainties is None
            else [None if u != u else u for u in p.uncertainties.tolist()]
        )
        metadata = (
            [orjson.dumps(m).decode() if m else None for m in p.metadata]
            if p.metadata
            else [None] * n
        )
        parts: list[list[Any]] = [
            p.event_ids,
            [p.tenant] * n,
            [p.model_name] * n,
            [p.model_version] * n,
            [p.model_version_id] * n,
            p.event_time_ms.tolist(),
            p.predicted_labels,
            p.confidences.tolist(),
            d.calibrated_confidences.tolist(),
            [d.threshold] * n,
            # The map that decided each event (a segment's, say), else the batch's.
            d.calibrator_versions or [d.calibrator_version] * n,
            np.where(d.review, "review", "auto").tolist(),
            _probabilities(d),
            _features(d),
            uncertainties,
            metadata,
            [d.decided_at_ms] * n,
        ]
        for col, part in zip(cols, parts, strict=True):
            col.extend(part)
    return cols


def label_columns(labels: Sequence[LabelColumns]) -> list[list[Any]]:
    """The 5 parameter arrays of :data:`WRITE_LABELS`, in consumed order."""
    cols: list[list[Any]] = [[] for _ in range(5)]
    for lbl in labels:
        parts: list[list[Any]] = [
            lbl.event_ids,
            [lbl.tenant] * len(lbl),
            lbl.ground_truths,
            lbl.sources,
            lbl.label_time_ms.tolist(),
        ]
        for col, part in zip(cols, parts, strict=True):
            col.extend(part)
    return cols


def alert_columns(alerts: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The 17 parameter arrays of :data:`INSERT_ALERTS`."""
    fields = (
        "alert_id", "tenant", "kind", "severity", "model_name", "model_version",
        "model_version_id", "metric", "feature", "method", "value", "threshold", "window",
        "reference_version", "n_samples", "created_at_ms",
    )  # fmt: skip
    cols = [[a[f] for a in alerts] for f in fields]
    cols.append([json.dumps(a["details"], sort_keys=True) for a in alerts])
    return cols


StatementTimer = Callable[[str, float], None]
"""Called with a statement's kind and its duration in seconds after each statement."""

STATEMENT_ROWS = 1_000
"""Most rows one statement takes: a big batch is written in slices of this size, in
consumed order. A statement's cost then grows with neither the batch nor the tables: at
this size PostgreSQL plans each join as key probes driven by the slice (nested loops over
the primary keys), where a statement of tens of thousands of rows (a fetch of 200
messages) read all of ``pending_labels`` into a hash table for every batch and took
seconds at 10 M predictions."""


def _slices(cols: list[list[Any]], rows: int) -> Iterator[list[list[Any]]]:
    n = len(cols[0]) if cols else 0
    for start in range(0, n, rows):
        yield [c[start : start + rows] for c in cols]


async def _timed(timer: StatementTimer | None, kind: str, call: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await call
    finally:
        if timer is not None:
            timer(kind, time.perf_counter() - started)


async def write(
    conn: asyncpg.Connection,
    decisions: Sequence[DecisionColumns] = (),
    labels: Sequence[LabelColumns] = (),
    alerts: Sequence[dict[str, Any]] = (),
    timer: StatementTimer | None = None,
    rows: int = STATEMENT_ROWS,
    new: bool = False,
) -> Written:
    """Write decisions, then labels, then alerts, in the caller's transaction.

    Decisions go first so a label consumed in the same batch as its decision is applied,
    not parked; labels parked earlier are applied as their decisions land. Each kind is
    written ``rows`` at a time, in consumed order (so the first label still wins).
    ``new``: none of the decisions is stored yet (:data:`INSERT_NEW_DECISIONS`); one that
    is raises ``asyncpg.UniqueViolationError`` and the transaction is to be written again
    without ``new``.
    """
    out = Written()
    insert = INSERT_NEW_DECISIONS if new else INSERT_DECISIONS
    for cols in _slices(decision_columns(decisions), rows):
        inserted, applied, consumed = await _timed(
            timer, "insert_decisions", conn.fetchrow(insert, *cols)
        )
        out.predictions += inserted
        out.labelled += applied
        out.pending_applied += consumed
    for cols in _slices(label_columns(labels), rows):
        applied, kept = await _timed(timer, "write_labels", conn.fetchrow(WRITE_LABELS, *cols))
        out.labelled += applied
        out.pending += kept
    if alerts:
        out.alerts = _count(
            await _timed(
                timer, "insert_alerts", conn.execute(INSERT_ALERTS, *alert_columns(alerts))
            )
        )
    return out
