"""Calibrator rollout: the candidate beside the active map in the registry (the gateway
writes it), the rollout state and its audit trail (the calibrator writes them), and the
operators' rollout requests (the gateway writes them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE model_versions
            ADD COLUMN candidate_version text,
            ADD COLUMN candidate_calibrator jsonb,
            ADD COLUMN rollout_stage text CHECK (rollout_stage IN ('shadow', 'canary')),
            ADD COLUMN canary_share double precision NOT NULL DEFAULT 0
                CHECK (canary_share >= 0 AND canary_share <= 1),
            ADD COLUMN rollout_applied bigint NOT NULL DEFAULT 0;

        CREATE TABLE calibrator_rollouts (
            id                bigserial PRIMARY KEY,
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL REFERENCES model_versions(id),
            candidate_version text NOT NULL,
            previous_version  text NOT NULL,
            stage             text NOT NULL CHECK (stage IN
                ('shadow', 'canary', 'promoted', 'rolled_back', 'aborted', 'inconclusive')),
            canary_share      double precision NOT NULL DEFAULT 0,
            run_id            uuid,
            started_at        timestamptz NOT NULL DEFAULT now(),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, model_version_id, candidate_version)
        );
        CREATE UNIQUE INDEX calibrator_rollouts_one_open
            ON calibrator_rollouts (tenant_id, model_version_id)
            WHERE stage IN ('shadow', 'canary');

        CREATE TABLE rollout_transitions (
            id                bigserial PRIMARY KEY,
            rollout_id        bigint NOT NULL REFERENCES calibrator_rollouts(id),
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL,
            candidate_version text NOT NULL,
            from_stage        text NOT NULL,
            to_stage          text NOT NULL,
            trigger           text NOT NULL CHECK (trigger IN ('auto', 'manual')),
            reason            text NOT NULL,
            numbers           jsonb NOT NULL DEFAULT '{}'::jsonb,
            registry          jsonb NOT NULL,
            request_id        uuid,
            announced         boolean NOT NULL DEFAULT false,
            created_at        timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX rollout_transitions_by_model
            ON rollout_transitions (tenant_id, model_version_id, id);
        CREATE INDEX rollout_transitions_unannounced ON rollout_transitions (id)
            WHERE NOT announced;

        CREATE TABLE rollout_requests (
            request_id        uuid PRIMARY KEY,
            tenant_id         text NOT NULL,
            model_version_id  bigint NOT NULL REFERENCES model_versions(id),
            action            text NOT NULL
                CHECK (action IN ('shadow', 'canary', 'promote', 'abort', 'rollback')),
            artifact_version  text,
            canary_share      double precision,
            requested_by      bigint REFERENCES api_keys(id),
            requested_at      timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE rollout_request_outcomes (
            request_id        uuid PRIMARY KEY,
            outcome           text NOT NULL CHECK (outcome IN ('done', 'refused')),
            reason            text NOT NULL,
            transition_id     bigint REFERENCES rollout_transitions(id),
            handled_at        timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE rollout_request_outcomes; DROP TABLE rollout_requests;
        DROP TABLE rollout_transitions; DROP TABLE calibrator_rollouts;
        ALTER TABLE model_versions DROP COLUMN rollout_applied, DROP COLUMN canary_share,
            DROP COLUMN rollout_stage, DROP COLUMN candidate_calibrator,
            DROP COLUMN candidate_version;
        """
    )
