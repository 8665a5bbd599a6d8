"""The stack identity: which stack this database belongs to, and the generation of its data.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row at most (``singleton`` is always true); a freshly migrated database has none, which
    # is how a database that is newer than the stack's log shows itself.
    op.execute(
        """
        CREATE TABLE stack_identity (
            singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            stack_id    text NOT NULL,
            generation  bigint NOT NULL CHECK (generation > 0),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE stack_identity")
