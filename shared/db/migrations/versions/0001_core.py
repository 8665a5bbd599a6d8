"""Core tables: tenants and keys, the model registry, predictions, reviews, alerts, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE tenants (
            id          text PRIMARY KEY CHECK (id <> '' AND position('/' in id) = 0),
            name        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE api_keys (
            id          bigserial PRIMARY KEY,
            tenant_id   text NOT NULL REFERENCES tenants(id),
            key_hash    text NOT NULL UNIQUE,
            key_prefix  text NOT NULL,
            roles       text[] NOT NULL
                CHECK (roles <@ ARRAY['producer','reviewer','viewer','admin']::text[]
                       AND cardinality(roles) > 0),
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz
        );

        CREATE TABLE model_versions (
            id                 bigserial PRIMARY KEY,
            tenant_id          text NOT NULL REFERENCES tenants(id),
            name               text NOT NULL CHECK (name <> '' AND position('/' in name) = 0),
            version            text NOT NULL
                CHECK (version <> '' AND position('/' in version) = 0),
            stage              text NOT NULL DEFAULT 'staging'
                CHECK (stage IN ('production','staging','archived')),
            parent_id          bigint REFERENCES model_versions(id),
            abstain_threshold  double precision NOT NULL DEFAULT 0.7
                CHECK (abstain_threshold >= 0 AND abstain_threshold <= 1),
            calibrator_version text NOT NULL DEFAULT 'identity',
            calibrator         jsonb,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, name, version)
        );
        CREATE UNIQUE INDEX model_versions_one_production
            ON model_versions (tenant_id, name) WHERE stage = 'production';
        CREATE INDEX model_versions_parent ON model_versions (parent_id);

        CREATE TABLE predictions (
            event_id              uuid PRIMARY KEY,
            tenant_id             text NOT NULL,
            model_name            text NOT NULL,
            model_version         text NOT NULL,
            model_version_id      bigint,
            event_time            timestamptz NOT NULL,
            predicted_label       text NOT NULL,
            confidence            double precision NOT NULL,
            calibrated_confidence double precision,
            threshold             double precision,
            calibrator_version    text,
            status                text NOT NULL
                CHECK (status IN ('pending','auto','review','resolved')),
            ground_truth          text,
            correct               boolean,
            label_source          text CHECK (label_source IN ('feed','review','event')),
            labeled_at            timestamptz,
            probabilities         jsonb,
            features              jsonb,
            uncertainty           double precision,
            metadata              jsonb,
            decided_at            timestamptz,
            resolved_at           timestamptz,
            created_at            timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX predictions_review_queue
            ON predictions (tenant_id, model_name, model_version, event_time)
            WHERE status = 'review';
        CREATE INDEX predictions_by_model_time
            ON predictions (tenant_id, model_name, model_version, event_time);
        CREATE INDEX predictions_by_model_id ON predictions (model_version_id, event_time);

        CREATE TABLE pending_labels (
            event_id     uuid PRIMARY KEY,
            tenant_id    text NOT NULL,
            ground_truth text NOT NULL,
            source       text NOT NULL CHECK (source IN ('feed','review','event')),
            label_time   timestamptz NOT NULL
        );

        CREATE TABLE review_resolutions (
            event_id     uuid PRIMARY KEY,
            tenant_id    text NOT NULL,
            ground_truth text NOT NULL,
            api_key_id   bigint REFERENCES api_keys(id),
            resolved_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE alerts (
            id                bigserial PRIMARY KEY,
            alert_id          uuid NOT NULL UNIQUE,
            tenant_id         text NOT NULL,
            kind              text NOT NULL
                CHECK (kind IN ('calibration','drift','performance','recalibration')),
            severity          text NOT NULL CHECK (severity IN ('warning','critical','resolved')),
            model_name        text NOT NULL,
            model_version     text NOT NULL,
            model_version_id  bigint,
            metric            text NOT NULL,
            feature           text,
            method            text,
            value             double precision NOT NULL,
            threshold         double precision NOT NULL,
            window_name       text NOT NULL,
            reference_version text,
            n_samples         bigint NOT NULL DEFAULT 0,
            created_at        timestamptz NOT NULL,
            payload           jsonb NOT NULL DEFAULT '{}'::jsonb
        );
        CREATE INDEX alerts_by_model ON alerts (tenant_id, model_name, model_version, created_at);
        CREATE INDEX alerts_by_kind ON alerts (tenant_id, kind, created_at);

        CREATE TABLE outbox (
            id           bigserial PRIMARY KEY,
            topic        text NOT NULL,
            msg_key      bytea,
            msg_value    bytea,
            created_at   timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE outbox; DROP TABLE alerts; DROP TABLE review_resolutions;
        DROP TABLE pending_labels; DROP TABLE predictions; DROP TABLE model_versions;
        DROP TABLE api_keys; DROP TABLE tenants;
        """
    )
