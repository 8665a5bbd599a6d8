"""Integration fixtures: the real local stack, and an isolated slice of it per test module.

Each module gets its own topic namespace (which also names its consumer groups), Redis key
prefix and PostgreSQL database, so tests never see each other's data and can share one
stack with a running demo or another test session.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.settings import Settings
from tooling.benchmarking import (
    delete_redis_prefix,
    join_identity,
    scratch_database,
)
from tooling.benchmarking import (
    start_service as run_service,
)
from tooling.stack import delete_topics, ensure_topics, stack_up


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Settings of the local stack, brought up (or reused) once per test session."""
    settings = Settings()
    stack_up(settings)
    return settings


@pytest.fixture(scope="module")
def isolated_settings(stack_settings: Settings) -> Iterator[Settings]:
    """The stack's settings with a private topic namespace (``t<hex>``, topics created),
    Redis prefix and freshly migrated database, with a stack identity of their own; all three
    are removed afterwards."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    with scratch_database(stack_settings, prefix=f"caliber_{namespace}") as with_db:
        settings = with_db.model_copy(
            update={"topic_namespace": namespace, "redis_prefix": f"{namespace}:"}
        )
        try:
            ensure_topics(settings)
            join_identity(settings)
            yield settings
        finally:
            delete_topics(settings, namespace)
            delete_redis_prefix(settings)


def start_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """Run ``python -m services.<name>`` with ``settings``, output in ``log``.

    Tests run beside a demo and each other, so no fixed metrics port.
    """
    env = {"CALIBER_LOG_LEVEL": "INFO", "CALIBER_METRICS_PORT": "0", **extra}
    return run_service(name, settings, log, **env)


@contextmanager
def running_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_service` for the length of a ``with`` block, stopped however it ends."""
    proc = start_service(name, settings, log, **extra)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
