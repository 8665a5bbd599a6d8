"""Idempotent, batched writes of decisions, labels and alerts.

Each statement takes whole columns (``unnest`` of arrays), so a consumed batch costs one
statement per kind of record whatever its size. Every value written comes from the
messages, timestamps included (never ``now()``), so a replay changes no byte:
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from shared.contracts.batches import DecisionColumns, LabelColumns

# Epoch milliseconds → timestamptz, exactly (integer milliseconds times an interval).
_MS = "(TIMESTAMPTZ 'epoch' + ({} * INTERVAL '1 millisecond'))"


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


INSERT_PREDICTIONS = f"""
INSERT INTO predictions (
    event_id, tenant_id, model_name, model_version, model_version_id, event_time,
    predicted_label, confidence, calibrated_confidence, threshold, calibrator_version,
    status, probabilities, features, uncertainty, metadata, decided_at, created_at,
    decision, review_state)
SELECT d.event_id, d.tenant_id, d.model_name, d.model_version, d.model_version_id,
       {_MS.format("d.event_ms")}, d.predicted_label, d.confidence, d.calibrated,
       d.threshold, d.calibrator_version, d.status, d.probabilities, d.features,
       d.uncertainty, d.metadata, {_MS.format("d.decided_ms")}, {_MS.format("d.decided_ms")},
       d.status, CASE WHEN d.status = 'review' THEN 'open' ELSE 'none' END
FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
    $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::text[],
    $12::text[], $13::jsonb[], $14::jsonb[], $15::float8[], $16::jsonb[], $17::bigint[])
    WITH ORDINALITY AS d(
        event_id, tenant_id, model_name, model_version, model_version_id, event_ms,
        predicted_label, confidence, calibrated, threshold, calibrator_version,
        status, probabilities, features, uncertainty, metadata, decided_ms, ord)
ORDER BY d.ord
ON CONFLICT (tenant_id, event_id) DO NOTHING
"""

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

APPLY_PENDING = f"""
WITH pending AS (
    SELECT g.* FROM pending_labels AS g
    JOIN unnest($1::uuid[], $2::text[]) AS d(event_id, tenant_id) USING (tenant_id, event_id)
), applied AS (
    UPDATE predictions AS p {_LABEL_SET}
    FROM pending AS l
    WHERE p.event_id = l.event_id AND p.tenant_id = l.tenant_id AND p.ground_truth IS NULL
    RETURNING p.event_id
), consumed AS (
    DELETE FROM pending_labels AS g USING pending
    WHERE g.tenant_id = pending.tenant_id AND g.event_id = pending.event_id
    RETURNING g.event_id
)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM consumed)
"""
"""Labels that waited for these events' decisions: applied, then removed."""

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
    RETURNING p.event_id
), kept AS (
    INSERT INTO pending_labels (event_id, tenant_id, ground_truth, source, label_time)
    SELECT l.event_id, l.tenant_id, l.ground_truth, l.source, l.label_time FROM l
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
    return [json.dumps(r) if r else None for r in rows]


def _probabilities(d: DecisionColumns) -> list[str | None]:
    p = d.predictions
    if p.probabilities is None:
        return [None] * len(p)
    labels = p.class_labels
    return [
        json.dumps(dict(zip(labels, row, strict=True))) if row and row[0] == row[0] else None
        for row in p.probabilities.tolist()
    ]


def decision_columns(decisions: Sequence[DecisionColumns]) -> list[list[Any]]:
    """The 17 parameter arrays of :data:`INSERT_PREDICTIONS`, all decisions concatenated."""
    cols: list[list[Any]] = [[] for _ in range(17)]
    for d in decisions:
        p = d.predictions
        n = len(p)
        uncertainties = (
            [None] * n
            if p.uncertainties is None
            else [None if u != u else u for u in p.uncertainties.tolist()]
        )
        metadata = [json.dumps(m) if m else None for m in p.metadata] if p.metadata else [None] * n
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
            d.calibrator_versions or [d.calibrator_version] * n,  # the map that decided each
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


async def write(
    conn: asyncpg.Connection,
    decisions: Sequence[DecisionColumns] = (),
    labels: Sequence[LabelColumns] = (),
    alerts: Sequence[dict[str, Any]] = (),
) -> Written:
    """Write decisions, then labels, then alerts, in the caller's transaction.

    Decisions go first so a label consumed in the same batch as its decision is applied,
    not parked; labels parked earlier are applied as their decisions land.
    """
    out = Written()
    if decisions:
        cols = decision_columns(decisions)
        out.predictions = _count(await conn.execute(INSERT_PREDICTIONS, *cols))
        applied, consumed = await conn.fetchrow(APPLY_PENDING, cols[0], cols[1])
        out.labelled += applied
        out.pending_applied = consumed
    if labels:
        applied, kept = await conn.fetchrow(WRITE_LABELS, *label_columns(labels))
        out.labelled += applied
        out.pending = kept
    if alerts:
        out.alerts = _count(await conn.execute(INSERT_ALERTS, *alert_columns(alerts)))
    return out
