"""Storage parameters for the recorder's tables at scale.

- ``predictions`` keeps 15 % of each new page free (``fillfactor = 85``): a label then
  rewrites its prediction on the same page, as a HOT update that touches no index (the
  columns a label changes are in no index but ``status`` and ``review_state``, which change
  only for a withheld prediction), where a full page moved the row and added an entry to
  each of the table's five indexes, one of them keyed by a random event id. Pages written
  before this revision keep their fill until they are rewritten.
- ``pending_labels`` is a queue (rows inserted, then deleted when their decisions land):
  autovacuum visits it after 2 % of its rows changed instead of 20 %, so dead entries do
  not pile up in its key, which every decision probes, and its statistics follow its size.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE predictions SET (fillfactor = 85);
        ALTER TABLE pending_labels SET (
            autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE predictions RESET (fillfactor);
        ALTER TABLE pending_labels RESET (
            autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor);
        """
    )
