"""Event ids are unique within a tenant, not across tenants: predictions, labels waiting for
their prediction, and review resolutions are keyed by (tenant_id, event_id), so one tenant's
event can neither shadow nor resolve another's that happens to share its id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("predictions", "pending_labels", "review_resolutions")


def upgrade() -> None:
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, "
            f"ADD PRIMARY KEY (tenant_id, event_id)"
        )


def downgrade() -> None:
    # Fails, as it must, when two tenants now hold the same event id.
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD PRIMARY KEY (event_id)"
        )
