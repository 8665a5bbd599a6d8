"""Idempotent, batched writes of decisions, labels and alerts.

Each statement takes whole columns (``unnest`` of arrays), so one consumed batch costs a
handful of round trips whatever its size. Replays change nothing: predictions and alerts
are inserted ``ON CONFLICT DO NOTHING``, a label only fills a prediction that has none, and
status moves to ``resolved`` once, never back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.batches import DecisionColumns, LabelColumns


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True)
class Written:
    predictions: int = 0
    labelled: int = 0
    pending: int = 0
    alerts: int = 0
    extra: dict[str, int] = field(default_factory=dict)


INSERT_PREDICTIONS = """
INSERT INTO predictions (
    event_id, tenant_id, model_name, model_version, model_version_id, event_time,
    predicted_label, confidence, calibrated_confidence, threshold, calibrator_version,
    status, probabilities, features, uncertainty, metadata, decided_at)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[],
    $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::text[],
    $12::text[], $13::jsonb[], $14::jsonb[], $15::float8[], $16::jsonb[], $17::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""

# A label fills a prediction that has none and resolves it; never the other way round.
LABEL_SET = """
SET ground_truth = l.ground_truth,
    correct = (l.ground_truth = p.predicted_label),
    label_source = l.source,
    labeled_at = l.label_time,
    status = 'resolved',
    resolved_at = COALESCE(p.resolved_at, l.label_time)
"""

APPLY_LABELS = f"""
UPDATE predictions AS p {LABEL_SET}
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
     AS l(event_id, ground_truth, source, label_time)
WHERE p.event_id = l.event_id AND p.ground_truth IS NULL
"""

KEEP_PENDING = """
INSERT INTO pending_labels (event_id, tenant_id, ground_truth, source, label_time)
SELECT l.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
     AS l(event_id, tenant_id, ground_truth, source, label_time)
WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.event_id = l.event_id)
ON CONFLICT (event_id) DO NOTHING
"""

APPLY_PENDING = f"""
WITH applied AS (
    UPDATE predictions AS p {LABEL_SET}
    FROM pending_labels l
    WHERE l.event_id = ANY($1::uuid[]) AND p.event_id = l.event_id AND p.ground_truth IS NULL
    RETURNING p.event_id
)
DELETE FROM pending_labels WHERE event_id IN (SELECT event_id FROM applied)
"""

INSERT_ALERTS = """
INSERT INTO alerts (
    alert_id, tenant_id, kind, severity, model_name, model_version, model_version_id,
    metric, feature, method, value, threshold, window_name, reference_version, n_samples,
    created_at, payload)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
    $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::text[],
    $14::text[], $15::bigint[], $16::timestamptz[], $17::jsonb[])
ON CONFLICT (alert_id) DO NOTHING
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def decision_rows(d: DecisionColumns) -> list[list[Any]]:
    p = d.predictions
    n = len(p)
    features: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, values in p.numeric_features.items():
        for i, v in enumerate(values.tolist()):
            if v == v:  # NaN = missing
                features[i][name] = v
    for name, cats in p.categorical_features.items():
        for i, c in enumerate(cats):
            if c:
                features[i][name] = c
    probs: list[str | None] = [None] * n
    if p.probabilities is not None:
        for i, row in enumerate(p.probabilities.tolist()):
            if row and row[0] == row[0]:
                probs[i] = json.dumps(dict(zip(p.class_labels, row, strict=True)))
    decided = _ts(d.decided_at_ms)
    return [
        p.event_ids,
        [p.tenant] * n,
        [p.model_name] * n,
        [p.model_version] * n,
        [p.model_version_id] * n,
        [_ts(t) for t in p.event_time_ms.tolist()],
        p.predicted_labels,
        p.confidences.tolist(),
        d.calibrated_confidences.tolist(),
        [d.threshold] * n,
        [d.calibrator_version] * n,
        ["review" if r else "auto" for r in d.review.tolist()],
        probs,
        [json.dumps(f) if f else None for f in features],
        [None if u != u else u for u in p.uncertainties.tolist()]
        if p.uncertainties is not None
        else [None] * n,
        [json.dumps(m) if m else None for m in p.metadata] if p.metadata else [None] * n,
        [decided] * n,
    ]


async def write_batch(
    conn: asyncpg.Connection,
    decisions: Sequence[DecisionColumns],
    labels: Sequence[LabelColumns],
    alerts: Sequence[dict[str, Any]],
) -> Written:
    """Everything of one consumed batch, in one transaction: decisions, then labels."""
    out = Written()
    async with conn.transaction():
        ids: list[str] = []
        for d in decisions:
            status = await conn.execute(INSERT_PREDICTIONS, *decision_rows(d))
            out.predictions += _count(status)
            ids.extend(d.predictions.event_ids)
        if ids:
            status = await conn.execute(APPLY_PENDING, ids)
            out.labelled += _count(status)
        for lbl in labels:
            times = [_ts(t) for t in lbl.label_time_ms.tolist()]
            status = await conn.execute(
                APPLY_LABELS, lbl.event_ids, lbl.ground_truths, lbl.sources, times
            )
            out.labelled += _count(status)
            status = await conn.execute(
                KEEP_PENDING,
                lbl.event_ids,
                [lbl.tenant] * len(lbl),
                lbl.ground_truths,
                lbl.sources,
                times,
            )
            out.pending += _count(status)
        if alerts:
            status = await conn.execute(INSERT_ALERTS, *_alert_columns(alerts))
            out.alerts += _count(status)
    return out


def _alert_columns(alerts: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [
        [a["alert_id"] for a in alerts],
        [a["tenant"] for a in alerts],
        [a["kind"] for a in alerts],
        [a["severity"] for a in alerts],
        [a["model_name"] for a in alerts],
        [a["model_version"] for a in alerts],
        [a["model_version_id"] for a in alerts],
        [a["metric"] for a in alerts],
        [a["feature"] for a in alerts],
        [a["method"] for a in alerts],
        [a["value"] for a in alerts],
        [a["threshold"] for a in alerts],
        [a["window"] for a in alerts],
        [a["reference_version"] for a in alerts],
        [a["n_samples"] for a in alerts],
        [_ts(a["created_at_ms"]) for a in alerts],
        [json.dumps(a["details"]) for a in alerts],
    ]
