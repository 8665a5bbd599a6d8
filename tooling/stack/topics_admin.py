"""Creates Caliber's topics idempotently."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from shared.contracts.topics import Topics, is_worker_app_topic
from shared.runtime.kafka import make_admin
from shared.settings import Settings

logger = logging.getLogger(__name__)

MAX_REPLICATION = 3
"""Copies of every partition on a cluster large enough: one broker may fail, and with
``min.insync.replicas`` 2 an acknowledged write is on two brokers."""
MIN_INSYNC_REPLICATED = 2


def replication_factor(brokers: int, override: int | None = None) -> int:
    """The replication factor of new topics: ``override`` when set, else as many copies as
    there are brokers, up to three."""
    if override is not None:
        return override
    if brokers < 1:
        raise ValueError("the cluster lists no broker")
    return min(MAX_REPLICATION, brokers)


def replication_config(replicas: int) -> dict[str, str]:
    """Per-topic settings that follow from the replication factor: with three copies or
    more, a write needs two in sync (acks=all then survives the loss of any one broker)."""
    if replicas >= MAX_REPLICATION:
        return {"min.insync.replicas": str(MIN_INSYNC_REPLICATED)}
    return {}


def ensure_topics(settings: Settings, namespace: str | None = None) -> list[str]:
    """Create every topic of ``namespace`` that does not exist; returns the ones created."""
    topics = Topics.for_namespace(namespace or settings.topic_namespace)
    admin = make_admin(settings)
    metadata = admin.list_topics(timeout=10)
    existing = set(metadata.topics)
    replicas = replication_factor(len(metadata.brokers), settings.topic_replication_factor)
    wanted = [
        NewTopic(
            name,
            num_partitions=1 if name == topics.stack else settings.topic_partitions,
            replication_factor=replicas,
            config=topic_config(settings, name in topics.compacted) | replication_config(replicas),
        )
        for name in topics.all()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    logger.info("created topics %s", created)
    return created


def topic_config(settings: Settings, compacted: bool) -> dict[str, str]:
    """The retention contract: a compacted topic keeps the latest record of every key for
    ever; every other topic keeps every record for ``topic_retention_seconds`` (which the
    settings hold to at least the longest metric window plus the label horizon), whatever
    its size, so a lost Redis or PostgreSQL can be rebuilt from it."""
    if compacted:
        return {"cleanup.policy": "compact"}
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.topic_retention_seconds * 1000),
        "retention.bytes": "-1",
    }


def delete_topics(settings: Settings, namespace: str) -> None:
    """Delete the topics of a namespace (tests and benchmarks clean up after themselves):
    Caliber's and the ones its workers' Faust apps (``<namespace>-<worker>-worker``) declared
    for their own group; left behind, every run added partitions the broker keeps serving."""
    admin = make_admin(settings)
    names = Topics.for_namespace(namespace).all()
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [n for n in names if n in existing]
    doomed += sorted(n for n in existing if is_worker_app_topic(n, namespace))
    for future in admin.delete_topics(doomed, operation_timeout=30).values() if doomed else []:
        try:
            future.result()
        except KafkaException:
            logger.warning("could not delete a topic of %s", namespace, exc_info=True)
