"""Running services as processes (benchmarks, tests) and measuring them: memory, CPU,
histogram percentiles, fresh namespaces."""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr

from shared.db import migrate
from shared.runtime import identity, redis_client
from shared.settings import Settings
from tooling.stack import delete_topics, ensure_topics

REPO_ROOT = Path(__file__).resolve().parent.parent


def bench_settings(base: Settings | None = None) -> Settings:
    """Settings on a fresh topic namespace and Redis prefix, topics created; both are
    removed when the benchmark's process exits, so runs do not pile up in Redis."""
    base = base or Settings()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_namespace": ns, "redis_prefix": f"{ns}:"})
    ensure_topics(settings)
    join_identity(settings, into=("kafka", "redis"))  # never into the database it shares
    atexit.register(_remove_namespace, settings)
    exit_on_sigterm()
    return settings


def exit_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a CI runner, a supervisor) end the process as an exception
    does, so ``with`` blocks and ``atexit`` run: the services a benchmark started are stopped
    and its namespace removed, instead of workers left running to load the next run. Only
    where SIGTERM still has its default action, and only from the main thread (where Python
    runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def join_identity(
    settings: Settings, into: tuple[str, ...] = ("kafka", "redis", "postgres")
) -> None:
    """Give the stores in ``into`` (a fresh namespace, Redis prefix or scratch database) the
    stack identity of the stores they are combined with, so services started on the
    combination pass their start-up check; a new identity only when none of the three has
    one and all three are ``into``. Benchmarks and tests only: a real stack gets its
    identity once, from ``caliber stack up``, and a store that lacks it is rebuilt."""
    found = [
        identity.read_kafka(settings),
        identity.read_redis(settings),
        identity.read_postgres(settings),
    ]
    known = next((i for i in found if i is not None), None)
    if known is None:
        if len(set(into)) < 3:
            return  # none has one: the services' check passes as it is
        known = identity.Identity(str(uuid.uuid4()), 1)
    writers = {
        "kafka": identity.write_kafka,
        "redis": identity.write_redis,
        "postgres": identity.write_postgres,
    }
    for ident, (store, write) in zip(found, writers.items(), strict=True):
        if ident is None and store in into:
            write(settings, known)


def _remove_namespace(settings: Settings) -> None:
    delete_topics(settings, settings.topic_namespace)
    delete_redis_prefix(settings)


def delete_redis_prefix(settings: Settings) -> None:
    """Unlink every Redis key under ``settings.redis_prefix``."""
    client = redis_client.sync_client(settings.redis_dsn)
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


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointed at another database of the same server."""
    base, _, _ = dsn.partition("?")[0].rpartition("/")
    query = dsn.partition("?")[2]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@contextmanager
def scratch_database(settings: Settings, prefix: str = "caliber_scratch") -> Iterator[Settings]:
    """``settings`` pointed at a new, migrated database of the same server, dropped on
    exit, so a benchmark or a test module never touches the data of the main one."""
    database = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_dsn = settings.postgres_url
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    scratch = settings.model_copy(
        update={"postgres_dsn": SecretStr(with_database(admin_dsn, database))}
    )
    try:
        migrate(scratch.postgres_url)
        join_identity(scratch, into=("postgres",))
        yield scratch
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


WHERE_SETTINGS = frozenset({"CALIBER_KAFKA_BOOTSTRAP", "CALIBER_REDIS_URL", "CALIBER_POSTGRES_DSN"})
"""Where the stores are: taken from ``settings`` alone, never from the caller's environment
(a benchmark on the cluster profile must not inherit the single stack's addresses)."""


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a service on ``settings``: the caller's, including its other
    ``CALIBER_*`` settings (so a benchmark run with ``CALIBER_BATCH_LINGER_SECONDS=0.3``
    measures services that use it), with the stores, namespace and prefix of ``settings``
    and then ``extra`` over it."""
    env = {k: v for k, v in os.environ.items() if k not in WHERE_SETTINGS}
    env.update(
        CALIBER_KAFKA_PORT=str(settings.kafka_port),
        CALIBER_REDIS_PORT=str(settings.redis_port),
        CALIBER_POSTGRES_PORT=str(settings.postgres_port),
        CALIBER_TOPIC_NAMESPACE=settings.topic_namespace,
        CALIBER_REDIS_PREFIX=settings.redis_prefix,
        CALIBER_STACK_HOME=str(settings.stack_home),
        CALIBER_STACK_PROFILE=settings.stack_profile,
        CALIBER_KAFKA_CLUSTER_PORT=str(settings.kafka_cluster_port),
        CALIBER_REDIS_CLUSTER_PORT=str(settings.redis_cluster_port),
        CALIBER_LOG_LEVEL="WARNING",
    )
    if settings.kafka_bootstrap:
        env["CALIBER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    if settings.redis_url:
        env["CALIBER_REDIS_URL"] = settings.redis_url
    if settings.postgres_dsn is not None:
        env["CALIBER_POSTGRES_DSN"] = settings.postgres_url
    env.update(extra)
    return env


def start_service(
    name: str, settings: Settings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO_ROOT,
            env=service_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Quantile ``q`` of a Prometheus histogram, interpolated within its bucket."""
    buckets = []
    for m in re.finditer(rf'^{name}_bucket\{{.*?le="([^"]+)".*?\}} ([0-9.e+]+)$', text, re.M):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, float(m.group(2))))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0.0)
        prev_le, prev_count = le, count
    return prev_le
