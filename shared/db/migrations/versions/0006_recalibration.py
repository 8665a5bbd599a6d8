"""Recalibration: manual requests (the gateway writes them), calibration sets, artifacts,
runs and the staged calibrator of each model version (the calibrator writes those).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE calibration_requests (
            run_id            uuid PRIMARY KEY,
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL REFERENCES model_versions(id),
            methods           text[],
            window_seconds    bigint,
            requested_by      bigint REFERENCES api_keys(id),
            requested_at      timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE calibration_sets (
            hash              text PRIMARY KEY CHECK (length(hash) = 64),
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL,
            manifest          jsonb NOT NULL,
            rows_blob         bytea NOT NULL,
            created_at        timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX calibration_sets_by_model ON calibration_sets (tenant_id, model_version_id);

        CREATE TABLE calibration_artifacts (
            tenant_id         text NOT NULL,
            version           text NOT NULL,
            model_version_id  bigint NOT NULL,
            kind              text NOT NULL,
            artifact          text NOT NULL,
            set_hash          text NOT NULL REFERENCES calibration_sets(hash),
            created_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, version)
        );

        CREATE TABLE calibration_runs (
            id                bigserial PRIMARY KEY,
            run_id            uuid NOT NULL UNIQUE,
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL,
            model_name        text NOT NULL,
            model_version     text NOT NULL,
            trigger           text NOT NULL
                CHECK (trigger IN ('calibration_alert','drift_alert','schedule','promoted',
                                   'manual')),
            trigger_detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
            coalesced         jsonb NOT NULL DEFAULT '[]'::jsonb,
            status            text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending','running','done')),
            attempts          integer NOT NULL DEFAULT 0,
            verdict           text CHECK (verdict IN ('staged','rejected','failed','not_staged')),
            reason            text,
            advice            text CHECK (advice IN ('recalibrate','retrain','healthy')),
            result            jsonb,
            set_hash          text REFERENCES calibration_sets(hash),
            artifact_version  text,
            announced         boolean NOT NULL DEFAULT false,
            requested_at      timestamptz NOT NULL DEFAULT now(),
            started_at        timestamptz,
            finished_at       timestamptz
        );
        CREATE INDEX calibration_runs_by_model
            ON calibration_runs (tenant_id, model_version_id, id);
        CREATE UNIQUE INDEX calibration_runs_one_pending
            ON calibration_runs (tenant_id, model_version_id) WHERE status = 'pending';
        CREATE INDEX calibration_runs_unannounced ON calibration_runs (id)
            WHERE status = 'done' AND NOT announced;

        CREATE TABLE staged_calibrators (
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL,
            artifact_version  text NOT NULL,
            run_id            uuid NOT NULL,
            staged_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, model_version_id),
            FOREIGN KEY (tenant_id, artifact_version)
                REFERENCES calibration_artifacts (tenant_id, version)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE staged_calibrators; DROP TABLE calibration_runs;
        DROP TABLE calibration_artifacts; DROP TABLE calibration_sets;
        DROP TABLE calibration_requests;
        """
    )
