"""Migration 0004 derives the policy's decision and the review state of existing rows."""

from __future__ import annotations

import uuid

import psycopg
from alembic import command

from shared.db import alembic_config, migrate
from shared.settings import Settings

ROWS = {
    # name: (status before, calibrated, threshold, ground truth, label source, reviewed)
    "auto_open": ("auto", 0.9, 0.6, None, None, False),
    "auto_labelled": ("resolved", 0.9, 0.6, "yes", "feed", False),
    "review_open": ("review", 0.4, 0.6, None, None, False),
    "review_by_feed": ("resolved", 0.4, 0.6, "no", "feed", False),
    "review_by_reviewer": ("resolved", 0.4, 0.6, "yes", "review", True),
    "no_calibration_reviewed": ("resolved", None, None, "yes", "review", True),
}


def test_existing_rows_get_their_decision_and_review_state(isolated_settings: Settings) -> None:
    dsn = isolated_settings.postgres_url
    command.downgrade(alembic_config(dsn), "0003")
    ids = {name: str(uuid.uuid4()) for name in ROWS}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('mig', 'mig') ON CONFLICT DO NOTHING")
        key_id = conn.execute(
            "INSERT INTO api_keys (tenant_id, key_hash, key_prefix, roles) "
            "VALUES ('mig', %s, 'k', ARRAY['reviewer']) RETURNING id",
            (uuid.uuid4().hex,),
        ).fetchone()[0]  # type: ignore[index]
        for name, (status, cal, thr, truth, source, reviewed) in ROWS.items():
            conn.execute(
                "INSERT INTO predictions (event_id, tenant_id, model_name, model_version, "
                "event_time, predicted_label, confidence, calibrated_confidence, threshold, "
                "status, ground_truth, label_source, labeled_at, resolved_at) VALUES "
                "(%s, 'mig', 'm', 'v1', now(), 'yes', 0.5, %s, %s, %s, %s, %s, "
                "CASE WHEN %s::text IS NULL THEN NULL ELSE now() END, "
                "CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)",
                (ids[name], cal, thr, status, truth, source, truth, truth),
            )
            if reviewed:
                conn.execute(
                    "INSERT INTO review_resolutions (event_id, tenant_id, ground_truth, "
                    "api_key_id) VALUES (%s, 'mig', %s, %s)",
                    (ids[name], truth, key_id),
                )
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        got = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT event_id::text, status, decision, review_state, resolved_by, "
                "reviewer_key_id, resolved_at IS NOT NULL FROM predictions WHERE tenant_id = 'mig'"
            ).fetchall()
        }
    by_name = {name: got[eid] for name, eid in ids.items()}
    assert by_name == {
        "auto_open": ("auto", "auto", "none", None, None, False),
        "auto_labelled": ("auto", "auto", "none", None, None, False),
        "review_open": ("review", "review", "open", None, None, False),
        "review_by_feed": ("resolved", "review", "resolved", "feed", None, True),
        "review_by_reviewer": ("resolved", "review", "resolved", "review", key_id, True),
        "no_calibration_reviewed": ("resolved", "review", "resolved", "review", key_id, True),
    }
