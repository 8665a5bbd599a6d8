"""The local stack: idempotent up, status, topics and migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from confluent_kafka.admin import ConfigResource, ResourceType
from psycopg import sql
from typer.testing import CliRunner

from shared.contracts.topics import Topics
from shared.db import current_revision, head_revision, migrate
from shared.runtime.kafka import make_admin
from shared.runtime.priority import thread_ids
from shared.settings import Settings
from tooling.benchmarking import with_database
from tooling.cli import app
from tooling.stack import delete_topics, ensure_topics, stack_status, stack_up
from tooling.stack.kafka import Kafka
from tooling.stack.redis import Redis

CORE_TABLES = {
    "tenants",
    "api_keys",
    "model_versions",
    "predictions",
    "pending_labels",
    "review_resolutions",
    "alerts",
    "outbox",
}


def test_a_second_up_reuses_everything_quickly(stack_settings: Settings) -> None:
    started = time.monotonic()
    result = stack_up(stack_settings)
    assert time.monotonic() - started < 10
    assert set(result.actions) == {"kafka", "redis", "postgres"}
    assert set(result.actions.values()) <= {"reused", "external"}
    assert result.topics_created == []
    assert result.database_revision == head_revision()


def test_status_reports_every_server_with_its_port(stack_settings: Settings) -> None:
    rows = {s.name: s for s in stack_status(stack_settings)}
    assert set(rows) == {"kafka", "redis", "postgres"}
    assert all(s.running for s in rows.values())
    ports = {
        "kafka": stack_settings.kafka_port,
        "redis": stack_settings.redis_port,
        "postgres": stack_settings.postgres_port,
    }
    for name, s in rows.items():
        if s.managed:
            assert s.port == ports[name]
            assert s.pid is not None and s.log is not None and s.log.exists()


def test_the_stacks_redis_runs_at_its_niceness(stack_settings: Settings) -> None:
    """``stack up`` puts every thread of its Redis at ``redis_nice``, a Redis it reuses
    too, and back to 0 with the default."""
    server = Redis(stack_settings)
    if not server.managed:
        pytest.skip("an external Redis keeps the priority its owner gave it")
    pid = server.pid()
    assert pid is not None
    threads = thread_ids(pid)
    assert len(threads) >= 2  # the event loop and Redis's background threads

    def niceness() -> set[int]:
        return {os.getpriority(os.PRIO_PROCESS, t) for t in thread_ids(pid)}

    raised = -5 if os.geteuid() == 0 else 0  # below 0 needs root
    try:
        stack_up(stack_settings.model_copy(update={"redis_nice": raised}))
        assert niceness() == {raised}
    finally:
        stack_up(stack_settings)
    assert stack_settings.redis_nice == 0 and niceness() == {0}


def test_the_stacks_broker_runs_with_its_heap_settings(stack_settings: Settings) -> None:
    """The broker the stack started: the parallel collector on a fixed heap, and the log
    cleaner's key map (a heap buffer held for good) at 32 MB, which the broker took (an
    unknown or misspelt property would only have been logged)."""
    kafka = Kafka(stack_settings)
    if not kafka.managed:
        pytest.skip("an external broker keeps the settings its owner gave it")
    pid = kafka.pid()
    assert pid is not None
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        command = fh.read().decode().split("\0")
    assert "-XX:+UseParallelGC" in command
    heap = {o[:4]: o[4:] for o in command if o[:4] in ("-Xms", "-Xmx")}
    assert heap.keys() == {"-Xms", "-Xmx"} and heap["-Xms"] == heap["-Xmx"]
    resource = ConfigResource(ResourceType.BROKER, "1")
    admin = make_admin(stack_settings)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    entry = config["log.cleaner.dedupe.buffer.size"]
    assert int(entry.value) == 32 * 1024 * 1024 and not entry.is_default


def test_status_command_prints_the_table(stack_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["stack", "status"])
    assert result.exit_code == 0, result.output
    header, *lines, identity = result.output.splitlines()
    assert header.split()[:5] == ["COMPONENT", "STATE", "KIND", "PORT", "PID"]
    assert {line.split()[0] for line in lines} == {"kafka", "redis", "postgres"}
    assert all(line.split()[1] == "running" for line in lines)
    # The stores belong to one stack: its identity, and no mismatch line.
    assert identity.startswith("identity  stack ") and "generation" in identity


def test_ensure_topics_twice_creates_once(stack_settings: Settings) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    try:
        first = ensure_topics(stack_settings, namespace=namespace)
        second = ensure_topics(stack_settings, namespace=namespace)
    finally:
        delete_topics(stack_settings, namespace)
    assert sorted(first) == sorted(Topics.for_namespace(namespace).all())
    assert second == []


def test_topics_have_the_partitions_and_model_updates_is_compacted(
    isolated_settings: Settings,
) -> None:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    admin = make_admin(isolated_settings)
    meta = admin.list_topics(timeout=10).topics
    for name in topics.all():
        partitions = 1 if name == topics.stack else isolated_settings.topic_partitions
        assert len(meta[name].partitions) == partitions, name
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics.all()]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    for name in topics.all():
        expected = "compact" if name in topics.compacted else "delete"
        assert configs[name]["cleanup.policy"].value == expected, name
        if expected == "delete":
            retention = isolated_settings.topic_retention_seconds * 1000
            assert configs[name]["retention.ms"].value == str(retention), name


def test_migrations_are_at_head_with_every_table(isolated_settings: Settings) -> None:
    assert head_revision() is not None
    assert current_revision(isolated_settings.postgres_url) == head_revision()
    with psycopg.connect(isolated_settings.postgres_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert tables >= CORE_TABLES


def test_concurrent_migrations_of_a_new_database_all_succeed(stack_settings: Settings) -> None:
    database = f"caliber_m{uuid.uuid4().hex[:10]}"
    admin_dsn = stack_settings.postgres_url
    dsn = with_database(admin_dsn, database)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        code = f"from shared.db import migrate; migrate({dsn!r})"
        runs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
        assert [run.wait(timeout=120) for run in runs] == [0, 0, 0]
        migrate(dsn)  # and again, with nothing left to do
        assert current_revision(dsn) == head_revision()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
