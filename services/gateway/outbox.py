"""The transactional outbox: rows written with a change, published to Kafka afterwards.

A change that must reach PostgreSQL and Kafka (a registry update, a review resolution)
writes its message into ``outbox`` in the same transaction; the relay publishes unpublished
rows in id order and marks them. Delivery is at least once: consumers are idempotent
(model-updates is compacted, ingest deduplicates labels by event_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from confluent_kafka import Producer

logger = logging.getLogger(__name__)


async def enqueue(conn: asyncpg.Connection, topic: str, key: bytes | None, value: bytes) -> None:
    await conn.execute(
        "INSERT INTO outbox (topic, msg_key, msg_value) VALUES ($1, $2, $3)", topic, key, value
    )


async def publish_pending(pool: asyncpg.Pool, producer: Producer, limit: int = 500) -> int:
    """Publish one chunk of unpublished rows; returns how many were published."""
    loop = asyncio.get_running_loop()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, topic, msg_key, msg_value FROM outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
        if not rows:
            return 0
        for row in rows:
            producer.produce(row["topic"], row["msg_value"], row["msg_key"])
        remaining = await loop.run_in_executor(None, producer.flush, 30.0)
        if remaining:
            raise ConnectionError(f"{remaining} outbox messages not acknowledged by Kafka")
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
            [r["id"] for r in rows],
        )
    return len(rows)


async def backlog(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def relay(
    pool: asyncpg.Pool, producer: Producer, interval: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            while await publish_pending(pool, producer):
                pass
        except (OSError, ConnectionError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("outbox relay: %s; retrying", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
