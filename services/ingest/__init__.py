"""The ingest gate: validates, deduplicates and batches every inference event and label."""
