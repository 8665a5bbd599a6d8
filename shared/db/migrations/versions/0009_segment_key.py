"""The segment key of a model version (per-segment recalibration).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A feature or metadata key of the version's events; NULL = one calibrator for all.
    op.execute(
        "ALTER TABLE model_versions ADD COLUMN segment_key text "
        "CHECK (segment_key IS NULL OR segment_key <> '')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE model_versions DROP COLUMN segment_key")
