"""Brings the whole local stack up or down, reusing whatever already runs.

The three servers start side by side (Kafka's jar download and JVM start dominate, so
waiting for each in turn would add the others' time). Each one's follow-up runs as soon as
it is ready: topics once Kafka answers, migrations once PostgreSQL does. A file lock in the
stack home keeps two ``up`` runs (two test sessions, say) from starting servers twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from shared.db import current_revision, migrate
from shared.runtime import identity
from shared.settings import Settings
from tooling.stack.base import ComponentStatus, Server, StartAction, StopAction
from tooling.stack.kafka import Kafka
from tooling.stack.kafka_cluster import KafkaCluster
from tooling.stack.postgres import Postgres
from tooling.stack.process import StackError
from tooling.stack.redis import Redis
from tooling.stack.redis_cluster import RedisCluster
from tooling.stack.topics_admin import ensure_topics

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpResult:
    actions: dict[str, StartAction]
    """Component → started | reused | external."""
    topics_created: list[str]
    seconds: float
    database_revision: str | None = None
    component_seconds: dict[str, float] = field(default_factory=dict)
    """How long each component took to be ready, its follow-up included."""
    identity: str | None = None
    """The stack identity the log holds (created with a new stack)."""
    identity_problems: list[str] = field(default_factory=list)
    """One line per store out of step with the log (see :mod:`shared.runtime.identity`)."""


def components(settings: Settings) -> list[Server]:
    """The servers of the settings' profile: PostgreSQL is one server in both; the cluster
    profile has a 3-broker Kafka and a 3-master Redis Cluster instead of one of each."""
    if settings.stack_profile == "cluster":
        return [Postgres(settings), RedisCluster(settings), KafkaCluster(settings)]
    return [Postgres(settings), Redis(settings), Kafka(settings)]


@contextmanager
def stack_lock(settings: Settings) -> Iterator[None]:
    settings.stack_home.mkdir(parents=True, exist_ok=True)
    with (settings.stack_home / "stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _in_parallel(jobs: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run ``jobs`` side by side; every failure is reported, not only the first."""
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="stack") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        results: dict[str, T] = {}
        failures: dict[str, BaseException] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:
                failures[name] = exc
    if failures:
        message = "\n".join(f"{name}: {exc}" for name, exc in failures.items())
        raise StackError(f"the local stack did not come up:\n{message}") from next(
            iter(failures.values())
        )
    return results


def stack_up(settings: Settings) -> UpResult:
    """Start what is not running, create topics, migrate the database. Idempotent."""
    started = time.monotonic()
    created: list[str] = []
    revision: list[str | None] = []

    def bring_up(server: Server) -> tuple[StartAction, float]:
        action = server.start()
        if isinstance(server, Kafka | KafkaCluster):
            created.extend(ensure_topics(settings))
        elif isinstance(server, Postgres):
            migrate(settings.postgres_url)
            revision.append(current_revision(settings.postgres_url))
        seconds = time.monotonic() - started
        logger.info("%s %s, ready after %.1f s", server.name, action, seconds)
        return action, seconds

    with stack_lock(settings):
        outcome = _in_parallel({s.name: partial(bring_up, s) for s in components(settings)})
        ident = identity.ensure(settings)
        found = identity.check(settings)
        problems = _upgraded_redis(settings, found)
        if problems is not found:  # Redis rebuilt: the log's identity moved a generation on
            ident = identity.read_kafka(settings)
    return UpResult(
        actions={name: action for name, (action, _) in outcome.items()},
        topics_created=sorted(created),
        seconds=time.monotonic() - started,
        database_revision=revision[0] if revision else None,
        component_seconds={name: seconds for name, (_, seconds) in outcome.items()},
        identity=None if ident is None else str(ident),
        identity_problems=problems,
    )


def _upgraded_redis(settings: Settings, problems: list[str]) -> list[str]:
    """When Redis's only fault is an older key layout (state written by an earlier version,
    which this one does not read), rebuild it from the log, as ``caliber rebuild redis``
    would, unless a worker is writing it; the problems that remain."""
    if not problems or not all(line.startswith(identity.LAYOUT_MISMATCH) for line in problems):
        return problems
    from services.drift.settings import DriftSettings
    from tooling.rebuild import rebuild_redis, running_writers

    if running_writers(settings, "redis"):
        return problems
    logger.warning("%s: rebuilding Redis from the log", problems[0])
    asyncio.run(rebuild_redis(DriftSettings(**settings.model_dump())))
    return identity.check(settings)


def stack_down(settings: Settings) -> dict[str, StopAction]:
    """Stop what the stack started; external servers are left alone.

    Returns component → stopped | not running | external.
    """
    with stack_lock(settings):
        return _in_parallel({s.name: s.stop for s in own_servers(settings)})


def own_servers(settings: Settings) -> list[Server]:
    """The servers ``down`` and ``reset`` of the profile stop: every one of the single
    profile; on the cluster profile the clusters only, since its PostgreSQL is the single
    profile's server (``reset`` drops the cluster's database instead)."""
    if settings.stack_profile == "cluster":
        return [s for s in components(settings) if not isinstance(s, Postgres)]
    return components(settings)


def stack_status(settings: Settings) -> list[ComponentStatus]:
    return [s.status() for s in components(settings)]


def data_folders(settings: Settings) -> list[Path]:
    """Every folder holding data of the managed servers (logs and binaries are kept)."""
    folders: list[Path] = []
    for server in own_servers(settings):
        if not server.managed:
            continue
        if isinstance(server, Kafka):
            folders.append(server.data)
        elif isinstance(server, KafkaCluster):
            folders.extend(node.data for node in server.nodes)
        elif isinstance(server, Redis):
            folders.append(server.home)
        elif isinstance(server, RedisCluster):
            folders.extend(node.home for node in server.nodes)
        elif isinstance(server, Postgres):
            folders.append(server.root)
    folders.append(settings.stack_home / "faust")
    return folders


def stack_reset(settings: Settings) -> list[Path]:
    """Stop the servers and delete their data: the next ``up`` starts a new, empty stack with
    a new identity. Returns the folders removed. External servers are left alone."""
    with stack_lock(settings):
        _in_parallel({s.name: s.stop for s in own_servers(settings)})
        postgres = Postgres(settings)
        if settings.stack_profile == "cluster" and postgres.managed and postgres.alive():
            postgres.drop_database(settings.postgres_database)
        removed = []
        for folder in data_folders(settings):
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
    return removed
