"""Every Prometheus metric of the recorder.

Label values are bounded: ``table`` and ``operation`` are fixed names, ``code`` an
:class:`shared.contracts.errors.ErrorCode`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.recorder.store import Written
from shared.runtime.pipeline_metrics import PipelineMetrics


class RecorderMetrics(PipelineMetrics):
    """Also ``caliber_recorder_batch_seconds`` (fetch → offsets committed, the PostgreSQL
    transaction included), ``caliber_recorder_batch_messages`` and
    ``caliber_recorder_consumer_lag_messages``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("recorder", registry)
        self.rows = Counter(
            "caliber_recorder_rows_total",
            "Rows changed in PostgreSQL, by table and operation: predictions insert | label, "
            "pending_labels insert | delete, alerts insert (replays change and count nothing)",
            ["table", "operation"],
            registry=registry,
        )
        self.statement_seconds = Histogram(
            "caliber_recorder_statement_seconds",
            "Duration of each PostgreSQL statement the recorder runs, by kind: "
            "insert_decisions | write_labels | insert_alerts",
            ["statement"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=registry,
        )
        self.replayed_batches = Counter(
            "caliber_recorder_replayed_batches_total",
            "Batches written a second time, skipping what is stored, because a decision in "
            "them was stored already (a batch replayed after a crash)",
            registry=registry,
        )
        self.dead_letters = Counter(
            "caliber_recorder_dead_letters_total",
            "Consumed messages the recorder could not store, by error code",
            ["code"],
            registry=registry,
        )

    def statement(self, kind: str, seconds: float) -> None:
        self.statement_seconds.labels(kind).observe(seconds)

    def count(self, written: Written, dead_letter_codes: Iterable[str]) -> None:
        for table, operation, n in (
            ("predictions", "insert", written.predictions),
            ("predictions", "label", written.labelled),
            ("pending_labels", "insert", written.pending),
            ("pending_labels", "delete", written.pending_applied),
            ("alerts", "insert", written.alerts),
        ):
            if n:
                self.rows.labels(table, operation).inc(n)
        for code in dead_letter_codes:
            self.dead_letters.labels(code).inc()
