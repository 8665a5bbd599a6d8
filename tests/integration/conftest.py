"""Integration fixtures: the real local stack, and an isolated slice of it per test module.

Each module gets its own topic namespace, consumer groups, Redis key prefix and PostgreSQL
database, so tests never see each other's data and can run against a shared stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from shared.db import migrate
from shared.settings import Settings
from shared.stack import delete_topics, ensure_topics, stack_up

ROOT = Path(__file__).resolve().parents[2]


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


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a service subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALIBER_")}
    env.update(
        {
            "CALIBER_KAFKA_PORT": str(settings.kafka_port),
            "CALIBER_REDIS_PORT": str(settings.redis_port),
            "CALIBER_POSTGRES_DSN": settings.postgres_url,
            "CALIBER_TOPIC_NAMESPACE": settings.topic_namespace,
            "CALIBER_REDIS_PREFIX": settings.redis_prefix,
            "CALIBER_STACK_HOME": str(settings.stack_home),
            "CALIBER_LOG_LEVEL": "INFO",
            # Tests run beside a demo or each other: no fixed metrics ports.
            "CALIBER_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.kafka_bootstrap:
        env["CALIBER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    if settings.redis_url:
        env["CALIBER_REDIS_URL"] = settings.redis_url
    env.update(extra)
    return env


def start_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """Run ``python -m services.<name>`` as its own process, output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=service_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
