"""Migration 0008 adds the rollout columns and tables and removes them again; a registry
row from before reads as "no candidate"."""

from __future__ import annotations

import psycopg
from alembic import command

from shared.db import alembic_config, migrate
from shared.registry.events import REGISTRY_COLUMNS, model_version_record
from shared.settings import Settings


def test_rollout_migration_round_trip(isolated_settings: Settings) -> None:
    dsn = isolated_settings.postgres_url
    command.downgrade(alembic_config(dsn), "0007")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('rollout_transitions')").fetchone() == (None,)
        conn.execute("INSERT INTO tenants (id, name) VALUES ('mig', 'mig') ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO model_versions (tenant_id, name, version, stage, abstain_threshold) "
            "VALUES ('mig', 'm', 'v1', 'production', 0.6)"
        )
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            f"SELECT {REGISTRY_COLUMNS}, rollout_applied FROM model_versions "
            "WHERE tenant_id = 'mig'"
        )
        names = [d.name for d in cur.description or []]
        row = dict(zip(names, cur.fetchone() or (), strict=True))
        assert row["rollout_applied"] == 0
        record = model_version_record(row)
        assert record["candidate_version"] is None and record["rollout_stage"] is None
        assert record["canary_share"] == 0.0
        for table in ("calibrator_rollouts", "rollout_transitions", "rollout_requests",
                      "rollout_request_outcomes"):  # fmt: skip
            assert conn.execute("SELECT count(*) FROM " + table).fetchone() == (0,)
