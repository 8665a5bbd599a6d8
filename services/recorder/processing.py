"""The recorder step: decode a consumed batch and write it to PostgreSQL in one transaction.

The pipeline commits the Kafka offsets only after this step returns, so a crash repeats a
batch (which :mod:`services.recorder.store` makes harmless) and never skips one. A message
that cannot be decoded or written (a malformed batch, a value PostgreSQL refuses) becomes a
dead letter; when a whole-batch write is refused, the batch is written again message by
message, each under a savepoint of the same transaction, and a refused columnar message
again event by event, so only the refused event is dead-lettered (with its event id) and
its batch-mates are stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from confluent_kafka import Message

from services.recorder.metrics import RecorderMetrics
from services.recorder.store import Written, write
from shared.contracts.batches import DecisionColumns, LabelColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.dead_letters import dead_letter
from shared.contracts.errors import ErrorCode
from shared.contracts.topics import Topics
from shared.contracts.validation import DEFAULT_LIMITS, Limits, check_batch_record
from shared.runtime import clock
from shared.runtime.pipeline import Output

logger = logging.getLogger(__name__)

# What a refused write raises when the data, not the server, is at fault.
DATA_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)
# What a write raises when PostgreSQL is unreachable or asks for a retry.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
)


@dataclass(slots=True)
class Parsed:
    """A consumed batch, decoded; ``source`` maps each record back to its message."""

    decisions: list[tuple[int, DecisionColumns]] = field(default_factory=list)
    labels: list[tuple[int, LabelColumns]] = field(default_factory=list)
    alerts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    faults: list[tuple[int, str, str]] = field(default_factory=list)
    """(message index, error code, message) of what could not be decoded."""
    event_faults: list[tuple[int, str, str, str]] = field(default_factory=list)
    """(message index, event id, error code, message) of single events PostgreSQL refused."""


def _decision_fault(rec: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> str | None:
    fault = check_batch_record(rec["predictions"], limits)
    if fault is not None:
        return fault.message
    n = len(rec["predictions"]["event_ids"])
    for name in ("calibrated_confidences", "statuses"):
        if len(rec[name]) != n:
            return f"{name} holds {len(rec[name])} values for {n} events"
    return None


def _label_fault(rec: dict[str, Any]) -> str | None:
    n = len(rec["event_ids"])
    for name in ("ground_truths", "sources", "label_time_ms"):
        if len(rec[name]) != n:
            return f"{name} holds {len(rec[name])} values for {n} event ids"
    return None


class RecorderProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        pool: asyncpg.Pool,
        metrics: RecorderMetrics | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._limits = limits
        self._topics = topics
        self._codec = codec
        self._pool = pool
        self._metrics = metrics
        self._timer = metrics.statement if metrics is not None else None
        self._expected = {
            topics.decisions: {"DecisionBatch"},
            topics.labels: {"LabelBatch"},
            topics.alerts: {"Alert"},
        }

    def parse(self, messages: Sequence[Message]) -> Parsed:
        out = Parsed()
        for i, m in enumerate(messages):
            expected = self._expected.get(str(m.topic()), set())
            decoded = self._codec.decode(m.value(), expected, columnar=True)
            if not isinstance(decoded, Decoded):
                out.faults.append((i, str(decoded.code), decoded.message))
                continue
            rec = decoded.record
            if decoded.name == "DecisionBatch":
                problem = _decision_fault(rec, self._limits)
                if problem is None:
                    out.decisions.append((i, DecisionColumns.from_record(rec)))
            elif decoded.name == "LabelBatch":
                problem = _label_fault(rec)
                if problem is None:
                    out.labels.append((i, LabelColumns.from_record(rec)))
            else:
                problem = None
                out.alerts.append((i, rec))
            if problem is not None:
                out.faults.append((i, str(ErrorCode.BATCH_SHAPE), problem))
        return out

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        parsed = self.parse(messages)
        try:
            async with self._pool.acquire() as conn:
                try:
                    written = await self._write_first(conn, parsed)
                except DATA_ERRORS as exc:
                    logger.warning("batch refused (%s); writing it message by message", exc)
                    written = await self._write_each(conn, parsed)
        except TRANSIENT_ERRORS as exc:
            # Nothing was committed; the pipeline retries the same batch once PostgreSQL is back.
            raise ConnectionError(f"PostgreSQL unavailable: {exc}") from exc
        now_ms = clock.now_ms()
        dead = [
            self._dead_letter(messages[i], code, text, now_ms) for i, code, text in parsed.faults
        ]
        dead += [
            self._dead_letter(messages[i], code, text, now_ms, eid)
            for i, eid, code, text in parsed.event_faults
        ]
        if self._metrics is not None:
            codes = [code for _, code, _ in parsed.faults]
            codes += [code for _, _, code, _ in parsed.event_faults]
            self._metrics.count(written, codes)
        return dead

    async def _write_first(self, conn: asyncpg.Connection, parsed: Parsed) -> Written:
        """The batch in one transaction, its decisions taken for new; when one is stored
        already (a replay after a crash, or a decision consumed twice), the transaction is
        rolled back and the batch written again, skipping what is stored."""
        try:
            return await self._write_all(conn, parsed, new=True)
        except asyncpg.UniqueViolationError:
            if self._metrics is not None:
                self._metrics.replayed_batches.inc()
            return await self._write_all(conn, parsed, new=False)

    async def _write_all(self, conn: asyncpg.Connection, parsed: Parsed, new: bool) -> Written:
        async with conn.transaction():
            return await write(
                conn,
                [d for _, d in parsed.decisions],
                [lbl for _, lbl in parsed.labels],
                [a for _, a in parsed.alerts],
                timer=self._timer,
                new=new,
            )

    async def _write_each(self, conn: asyncpg.Connection, parsed: Parsed) -> Written:
        """The same writes in the same order, one message per savepoint."""
        total = Written()
        items: list[tuple[int, dict[str, Any]]] = [
            *((i, {"decisions": [d]}) for i, d in parsed.decisions),
            *((i, {"labels": [lbl]}) for i, lbl in parsed.labels),
            *((i, {"alerts": [a]}) for i, a in parsed.alerts),
        ]
        async with conn.transaction():
            for i, kwargs in items:
                try:
                    async with conn.transaction():
                        total.add(await write(conn, **kwargs, timer=self._timer))
                except DATA_ERRORS as exc:
                    total.add(await self._write_rows(conn, parsed, i, kwargs, exc))
        return total

    async def _write_rows(
        self,
        conn: asyncpg.Connection,
        parsed: Parsed,
        index: int,
        kwargs: dict[str, Any],
        refused: Exception,
    ) -> Written:
        """A refused message, event by event: each event under its own savepoint, so one
        event's fault costs only that event."""
        if "alerts" in kwargs:
            parsed.faults.append((index, str(ErrorCode.REJECTED_BY_DATABASE), str(refused)))
            return Written()
        batch: DecisionColumns | LabelColumns = next(iter(kwargs.values()))[0]
        ids = batch.predictions.event_ids if isinstance(batch, DecisionColumns) else batch.event_ids
        if len(batch) == 1:
            parsed.event_faults.append(
                (index, ids[0], str(ErrorCode.REJECTED_BY_DATABASE), str(refused))
            )
            return Written()
        total = Written()
        for row in range(len(batch)):
            try:
                async with conn.transaction():
                    one: dict[str, Any] = {k: [batch.take([row])] for k in kwargs}
                    total.add(await write(conn, **one, timer=self._timer))
            except DATA_ERRORS as exc:
                parsed.event_faults.append(
                    (index, ids[row], str(ErrorCode.REJECTED_BY_DATABASE), str(exc))
                )
        return total

    def _dead_letter(
        self, m: Message, code: str, message: str, now_ms: int, event_id: str | None = None
    ) -> Output:
        return dead_letter(
            self._topics.deadletter, self._codec, m, code, message, "recorder", now_ms, event_id
        )
