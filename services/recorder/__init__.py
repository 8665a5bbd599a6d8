"""The recorder: the single writer of predictions, labels and alerts in PostgreSQL."""
