"""The policy's decision and the review state are separate facts of a prediction.

Until now a label for an auto-accepted prediction turned its ``status`` into ``resolved``,
so PostgreSQL could no longer tell it from one a reviewer resolved. From here on:

- ``decision`` (auto | review) is what the policy decided, written once, never changed;
- ``review_state`` (none | open | resolved) is the human side: ``none`` for an auto
  prediction, ``open`` for a withheld one until its ground truth arrives, then
  ``resolved``, with ``resolved_by`` (the label's source: review, feed or event),
  ``reviewer_key_id`` (the API key of a review resolution) and ``resolved_at``;
- ``status`` keeps its API meaning for withheld predictions (review → resolved) and stays
  ``auto`` for an auto prediction whatever labels arrive.

Existing rows are derived: the decision from the recorded calibrated confidence and
threshold (the policy's rule: below the threshold is review), or, where those are missing,
from the status and a review resolution; the review state from the decision and the
ground truth.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE predictions
            ADD COLUMN decision text CHECK (decision IN ('auto', 'review')),
            ADD COLUMN review_state text NOT NULL DEFAULT 'none'
                CHECK (review_state IN ('none', 'open', 'resolved')),
            ADD COLUMN resolved_by text CHECK (resolved_by IN ('feed', 'review', 'event')),
            ADD COLUMN reviewer_key_id bigint;

        UPDATE predictions AS p SET decision = CASE
            WHEN p.status IN ('auto', 'review') THEN p.status
            WHEN p.calibrated_confidence IS NOT NULL AND p.threshold IS NOT NULL THEN
                CASE WHEN p.calibrated_confidence < p.threshold THEN 'review' ELSE 'auto' END
            WHEN EXISTS (SELECT 1 FROM review_resolutions r
                         WHERE r.tenant_id = p.tenant_id AND r.event_id = p.event_id)
                THEN 'review'
            WHEN p.status = 'resolved' THEN 'auto'
            ELSE NULL
        END;

        UPDATE predictions AS p SET
            review_state = CASE
                WHEN p.decision = 'review' AND p.ground_truth IS NOT NULL THEN 'resolved'
                WHEN p.decision = 'review' THEN 'open'
                ELSE 'none'
            END,
            resolved_by = CASE
                WHEN p.decision = 'review' AND p.ground_truth IS NOT NULL THEN p.label_source
            END,
            reviewer_key_id = CASE
                WHEN p.decision = 'review' AND p.label_source = 'review' THEN
                    (SELECT r.api_key_id FROM review_resolutions r
                     WHERE r.tenant_id = p.tenant_id AND r.event_id = p.event_id)
            END,
            resolved_at = CASE
                WHEN p.decision = 'review' AND p.ground_truth IS NOT NULL THEN p.resolved_at
            END,
            status = CASE
                WHEN p.status = 'resolved' AND p.decision = 'auto' THEN 'auto'
                ELSE p.status
            END;

        CREATE INDEX predictions_by_review_state
            ON predictions (tenant_id, review_state, event_time) WHERE review_state = 'open';
        """
    )


def downgrade() -> None:
    # The old single status: a labelled prediction reads as resolved again.
    op.execute(
        """
        UPDATE predictions SET status = 'resolved', resolved_at = COALESCE(resolved_at, labeled_at)
            WHERE ground_truth IS NOT NULL;
        DROP INDEX predictions_by_review_state;
        ALTER TABLE predictions
            DROP COLUMN decision, DROP COLUMN review_state, DROP COLUMN resolved_by,
            DROP COLUMN reviewer_key_id;
        """
    )
