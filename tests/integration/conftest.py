"""Integration fixtures: the real local stack, and an isolated slice of it per test module.

Each module gets its own topic namespace, consumer groups, Redis key prefix and PostgreSQL
database, so tests never see each other's data and can run against a shared stack.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from shared.benchmarking import start_service as run_service
from shared.db import migrate
from shared.settings import Settings
from shared.stack import delete_topics, ensure_topics, stack_up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """The local stack, brought up (or reused) once per test session."""
    settings = Settings()
    stack_up(settings)
    return settings


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="module")
def isolated_settings(stack_settings: Settings) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:10]
    namespace = f"t{tag}"
    database = f"caliber_t{tag}"
    admin_dsn = stack_settings.postgres_url
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = _with_database(admin_dsn, database)
    migrate(dsn)
    settings = stack_settings.model_copy(
        update={
            "topic_namespace": namespace,
            "redis_prefix": f"{namespace}:",
            "postgres_dsn": SecretStr(dsn),
        }
    )
    ensure_topics(settings)
    yield settings
    delete_topics(settings, namespace)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def start_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """Run ``python -m services.<name>`` with ``settings``, output in ``log``.

    Tests run beside a demo and each other, so no fixed metrics port.
    """
    env = {"CALIBER_LOG_LEVEL": "INFO", "CALIBER_METRICS_PORT": "0", **extra}
    return run_service(name, settings, log, **env)
