"""The transactional outbox: rows written with a change, published to Kafka afterwards.

A change that must reach PostgreSQL and Kafka (a registry update, a review resolution)
writes its message into ``outbox`` in the same transaction and signals the relay with a
NOTIFY, which PostgreSQL delivers at commit. The relay publishes unpublished rows in id
order (``SELECT … FOR UPDATE SKIP LOCKED``), waits until Kafka has acknowledged them
(acks=all) and marks them published. A transaction-scoped advisory lock lets one relay at
a time publish, so several gateway instances never interleave rows out of order.

Delivery is at least once: a crash between Kafka's acknowledgement and the mark publishes
those rows again, which consumers absorb (model-updates is compacted to the latest state,
ingest deduplicates labels by event_id). When a row is refused, only the rows before it
are marked, so a later update of the same key can never overtake an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

CHANNEL = "caliber_outbox"
RELAY_LOCK = 0x0CA11BE5_0B0C5
"""Advisory lock key held by the relay that is publishing."""
CLEANUP_EVERY_SECONDS = 600.0


async def enqueue(conn: asyncpg.Connection, topic: str, key: bytes | None, value: bytes) -> None:
    """Add a message to the outbox within the caller's transaction."""
    await conn.execute(
        "WITH added AS (INSERT INTO outbox (topic, msg_key, msg_value) "
        "VALUES ($1, $2, $3) RETURNING id) SELECT pg_notify($4, '') FROM added",
        topic,
        key,
        value,
        CHANNEL,
    )


def delivered_prefix(errors: Sequence[str | None]) -> int:
    """How many rows, from the first, Kafka acknowledged without a gap (None = delivered)."""
    for i, err in enumerate(errors):
        if err is not None:
            return i
    return len(errors)


@dataclass(frozen=True, slots=True)
class Round:
    published: int
    error: str | None = None


def _produce(
    producer: Producer, rows: Sequence[asyncpg.Record], timeout: float
) -> list[str | None]:
    """Produce every row and wait; per row None (acknowledged) or the reason it was not."""
    errors: list[str | None] = ["not acknowledged in time"] * len(rows)

    def report(i: int) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, _msg: Message) -> None:
            errors[i] = None if err is None else str(err)

        return done

    for i, row in enumerate(rows):
        while True:
            try:
                producer.produce(
                    row["topic"], row["msg_value"], row["msg_key"], on_delivery=report(i)
                )
                break
            except BufferError:
                producer.flush(1.0)
    producer.flush(timeout)
    return errors


async def publish_pending(
    pool: asyncpg.Pool, producer: Producer, limit: int = 500, flush_seconds: float = 30.0
) -> Round:
    """Publish one chunk of unpublished rows, in id order."""
    loop = asyncio.get_running_loop()
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK):
            return Round(0)  # another relay is publishing
        rows = await conn.fetch(
            "SELECT id, topic, msg_key, msg_value FROM outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
        if not rows:
            return Round(0)
        errors = await loop.run_in_executor(None, _produce, producer, rows, flush_seconds)
        n = delivered_prefix(errors)
        if n:
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows[:n]],
            )
    if n < len(rows):
        return Round(n, f"outbox row {rows[n]['id']} to {rows[n]['topic']}: {errors[n]}")
    return Round(n)


async def backlog(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def _sleep(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Relay:
    """The background task that empties the outbox into Kafka."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        producer: Producer,
        metrics: GatewayMetrics,
        poll_seconds: float,
        batch_rows: int,
        retention_hours: float,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._producer = producer
        self._metrics = metrics
        self._poll = poll_seconds
        self._rows = batch_rows
        self._retention = retention_hours
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._cleaned = 0.0

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self._dsn)
        await self._listener.add_listener(CHANNEL, self._notified)

    async def _round(self) -> None:
        await self._listen()
        while True:
            result = await publish_pending(self._pool, self._producer, self._rows)
            self._metrics.outbox_published.inc(result.published)
            if result.error is not None:
                self._metrics.outbox_errors.inc()
                logger.warning("outbox relay: %s; retrying", result.error)
                break
            if result.published < self._rows:
                break
        self._metrics.outbox_backlog.set(await backlog(self._pool))
        if time.monotonic() - self._cleaned > CLEANUP_EVERY_SECONDS:
            await self._pool.execute(
                "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
                self._retention * 3600.0,
            )
            self._cleaned = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._round()
                except (
                    OSError,
                    ConnectionError,
                    TimeoutError,
                    KafkaException,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    self._metrics.outbox_errors.inc()
                    logger.warning("outbox relay: %s: %s; retrying", type(exc).__name__, exc)
                await _sleep(self._wake, stop, self._poll)
        finally:
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=5)
