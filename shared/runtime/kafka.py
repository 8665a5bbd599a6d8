"""Kafka client configuration: the one place that fixes the producer and consumer settings of
docs/architecture.md, "Reliability rules"."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from shared.settings import Settings

SESSION_TIMEOUT_MS = 10_000
"""How long a silent consumer keeps its partitions; a paused replica loses them after it."""
HEARTBEAT_INTERVAL_MS = 2_000


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """acks=all and idempotence always; a short linger so batches form under load.

    The partitioner is a contract, not a default: a keyed message goes to CRC-32 of its key
    (the model version key) modulo the partition count, which is how a replica knows the
    model versions it owns (:func:`shared.runtime.ownership.partition_of`)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_servers,
        "partitioner": "consistent_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.max.bytes": 8 * 1024 * 1024,
        "queue.buffering.max.kbytes": 256 * 1024,
    }
    conf.update(overrides)
    return conf


def transactional_producer_config(
    settings: Settings, transactional_id: str, **overrides: Any
) -> dict[str, Any]:
    """A producer whose writes and consumer offsets commit together (exactly-once).

    ``commit_transaction`` returns before the coordinator has written the commit markers, so
    a worker that starts its next transaction at once is told CONCURRENT_TRANSACTIONS and
    retries after ``retry.backoff.ms``. librdkafka's 100 ms default then adds about 100 ms to
    every busy iteration; 2 ms (doubling on each further retry up to
    ``retry.backoff.max.ms``) costs a few milliseconds instead.
    """
    return producer_config(
        settings,
        **{
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 15_000,
            "retry.backoff.ms": 2,
            **overrides,
        },
    )


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits, read_committed (transactions of aborted batches stay invisible)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        # A fetch is answered as soon as a record arrives; the wait only bounds how often
        # an idle consumer asks again (each ask is a wake-up in the client and the broker).
        "fetch.wait.max.ms": settings.kafka_fetch_wait_ms,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
    }
    conf.update(overrides)
    return conf


def gathering_fetch(settings: Settings, linger_seconds: float) -> dict[str, Any]:
    """Consumer settings of a reader off the decision path that takes its input once per
    ``linger_seconds``: once a partition has records waiting in the client, its next fetch
    waits out the linger (``fetch.queue.backoff.ms``) instead of following every append.
    Each fetch is a request the broker answers, and at moderate rates a busy topic is
    appended to hundreds of times a second (every producer request, every transaction
    marker). With nothing waiting, the consumer long-polls
    ``Settings.kafka_batch_fetch_wait_ms``; a quiet topic's first record still answers the
    poll at once."""
    return {
        "queued.min.messages": 1,
        "fetch.queue.backoff.ms": max(1, round(linger_seconds * 1000)),
        "fetch.wait.max.ms": settings.kafka_batch_fetch_wait_ms,
    }


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_servers})
