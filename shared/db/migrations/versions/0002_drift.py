"""Drift: uploaded reference profiles and per-feature thresholds (the gateway writes both;
the drift worker reads them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE drift_references (
            id                bigserial PRIMARY KEY,
            tenant_id         text NOT NULL REFERENCES tenants(id),
            model_version_id  bigint NOT NULL REFERENCES model_versions(id),
            version           text NOT NULL,
            n_samples         bigint NOT NULL CHECK (n_samples > 0),
            profile           jsonb NOT NULL,
            api_key_id        bigint REFERENCES api_keys(id),
            created_at        timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX drift_references_latest ON drift_references (model_version_id, id DESC);

        CREATE TABLE drift_thresholds (
            model_version_id  bigint NOT NULL REFERENCES model_versions(id),
            feature           text NOT NULL CHECK (feature <> ''),
            threshold         double precision NOT NULL CHECK (threshold > 0),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model_version_id, feature)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE drift_thresholds; DROP TABLE drift_references;")
