"""Integration fixtures: the real local stack, and an isolated slice of it per test module.

Each module gets its own topic namespace (which also names its consumer groups), Redis key
prefix and PostgreSQL database, so tests never see each other's data and can share one
stack with a running demo or another test session.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from pydantic import SecretStr

from shared.benchmarking import start_service as run_service
from shared.db import migrate
from shared.settings import Settings
from shared.stack import delete_topics, ensure_topics, stack_up


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Settings of the local stack, brought up (or reused) once per test session."""
    settings = Settings()
    stack_up(settings)
    return settings


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointed at another database of the same server."""
    base, _, _ = dsn.partition("?")[0].rpartition("/")
    query = dsn.partition("?")[2]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def isolated_settings(stack_settings: Settings) -> Iterator[Settings]:
    """The stack's settings with a private topic namespace (``t<hex>``, topics created),
    Redis prefix and freshly migrated database; all three are removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    namespace = f"t{tag}"
    database = f"caliber_t{tag}"
    admin_dsn = stack_settings.postgres_url
    settings = stack_settings.model_copy(
        update={
            "topic_namespace": namespace,
            "redis_prefix": f"{namespace}:",
            "postgres_dsn": SecretStr(with_database(admin_dsn, database)),
        }
    )
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        migrate(settings.postgres_url)
        ensure_topics(settings)
        yield settings
    finally:
        delete_topics(settings, namespace)
        _delete_redis_keys(settings)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def _delete_redis_keys(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_dsn)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def start_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """Run ``python -m services.<name>`` with ``settings``, output in ``log``.

    Tests run beside a demo and each other, so no fixed metrics port.
    """
    env = {"CALIBER_LOG_LEVEL": "INFO", "CALIBER_METRICS_PORT": "0", **extra}
    return run_service(name, settings, log, **env)
