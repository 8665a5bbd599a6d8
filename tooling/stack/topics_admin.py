"""Creates Caliber's topics idempotently."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from shared.contracts.topics import Topics
from shared.runtime.kafka import make_admin
from shared.settings import Settings

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, namespace: str | None = None) -> list[str]:
    """Create every topic of ``namespace`` that does not exist; returns the ones created."""
    topics = Topics.for_namespace(namespace or settings.topic_namespace)
    admin = make_admin(settings)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=1 if name == topics.stack else settings.topic_partitions,
            replication_factor=1,
            config=topic_config(settings, name in topics.compacted),
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
    """Delete the topics of a namespace (tests clean up after themselves)."""
    admin = make_admin(settings)
    names = Topics.for_namespace(namespace).all()
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [n for n in names if n in existing]
    for future in admin.delete_topics(doomed, operation_timeout=30).values() if doomed else []:
        try:
            future.result()
        except KafkaException:
            logger.warning("could not delete a topic of %s", namespace, exc_info=True)
