"""The local stack: idempotent up, status, topics and migrations."""

from __future__ import annotations

import time

import psycopg
from confluent_kafka.admin import ConfigResource, ResourceType

from shared.db import current_revision, head_revision
from shared.kafka import make_admin
from shared.settings import Settings
from shared.stack import ensure_topics, stack_status, stack_up
from shared.topics import Topics


def test_a_second_up_reuses_everything_quickly(stack_settings: Settings) -> None:
    started = time.monotonic()
    result = stack_up(stack_settings)
    assert time.monotonic() - started < 10
    assert set(result.actions.values()) <= {"reused", "external"}
    assert result.topics_created == []


def test_status_reports_every_server(stack_settings: Settings) -> None:
    rows = {s.name: s for s in stack_status(stack_settings)}
    assert set(rows) == {"kafka", "redis", "postgres"}
    assert all(s.running for s in rows.values())
    assert str(stack_settings.kafka_port) in rows["kafka"].address
    for s in rows.values():
        if s.managed:
            assert s.pid is not None and s.log is not None and s.log.exists()


def test_topics_partitions_and_compaction(isolated_settings: Settings) -> None:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    assert ensure_topics(isolated_settings) == []  # idempotent
    admin = make_admin(isolated_settings)
    meta = admin.list_topics(timeout=10).topics
    for name in topics.all():
        assert len(meta[name].partitions) == isolated_settings.topic_partitions, name
    resources = [
        ConfigResource(ResourceType.TOPIC, t) for t in (topics.model_updates, topics.predictions)
    ]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs[topics.model_updates]["cleanup.policy"].value == "compact"
    assert configs[topics.predictions]["cleanup.policy"].value == "delete"


def test_migrations_are_at_head(isolated_settings: Settings) -> None:
    assert current_revision(isolated_settings.postgres_url) == head_revision()
    with psycopg.connect(isolated_settings.postgres_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {
        "tenants",
        "api_keys",
        "model_versions",
        "predictions",
        "pending_labels",
        "review_resolutions",
        "alerts",
        "outbox",
    } <= tables
