"""The recorder step: decode a consumed batch and write it to PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from confluent_kafka import Message

from services.recorder.metrics import RecorderMetrics
from services.recorder.store import write_batch
from shared.batches import DecisionColumns, LabelColumns
from shared.codec import AvroCodec, Decoded
from shared.pipeline import Output
from shared.topics import Topics

logger = logging.getLogger(__name__)


class RecorderProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        pool: asyncpg.Pool,
        metrics: RecorderMetrics | None = None,
    ) -> None:
        self._topics = topics
        self._codec = codec
        self._pool = pool
        self._metrics = metrics
        self._expected = {
            topics.decisions: {"DecisionBatch"},
            topics.labels: {"LabelBatch"},
            topics.alerts: {"Alert"},
        }

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        decisions: list[DecisionColumns] = []
        labels: list[LabelColumns] = []
        alerts: list[dict[str, Any]] = []
        for m in messages:
            topic = str(m.topic())
            decoded = self._codec.decode(m.value(), self._expected.get(topic, set()))
            if not isinstance(decoded, Decoded):
                logger.error(
                    "skipping undecodable record %s[%s]@%s: %s",
                    topic,
                    m.partition(),
                    m.offset(),
                    decoded.message,
                )
                continue
            if decoded.name == "DecisionBatch":
                decisions.append(DecisionColumns.from_record(decoded.record))
            elif decoded.name == "LabelBatch":
                labels.append(LabelColumns.from_record(decoded.record))
            else:
                alerts.append(decoded.record)
        try:
            async with self._pool.acquire() as conn:
                written = await write_batch(conn, decisions, labels, alerts)
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            # Nothing was committed; the pipeline retries the same batch once PostgreSQL is back.
            raise ConnectionError(f"PostgreSQL unavailable: {exc}") from exc
        if self._metrics is not None:
            rows = self._metrics.rows
            rows.labels("predictions", "insert").inc(written.predictions)
            rows.labels("predictions", "label").inc(written.labelled)
            rows.labels("pending_labels", "insert").inc(written.pending)
            rows.labels("alerts", "insert").inc(written.alerts)
        return []
