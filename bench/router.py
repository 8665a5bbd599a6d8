"""Routing benchmark: decide latency through the gateway, router outcomes/s, Redis memory.

``python -m bench.router`` uses the local stack's Kafka and PostgreSQL on a fresh namespace
and scratch database (removed afterwards), and a Redis of its own on a free port (in a
temporary folder, stopped afterwards), so other users of the stack's Redis neither slow it
down nor are slowed by it:

1. decide: one gateway process; this process sends ``POST /api/route/decide`` (3 candidate
   paths with history) at a paced ``rate`` for ``seconds`` and measures each answer.
2. outcomes/s: ``outcomes`` decisions and their outcomes are produced to the routing topic,
   then one router worker process is started and timed from its first count to the last.
3. memory: ``MEMORY USAGE`` of one (goal, path)'s keys with outcomes on every hour of 2 days
   and every day of 31, and of one decision record.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
import typer

from services.gateway.auth import create_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.routing.state import DAY_MS, HOUR_MS, RouteKeys
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    histogram_quantile,
    join_identity,
    peak_rss_mb,
    scratch_database,
    start_service,
)

app = typer.Typer(add_completion=False)
CODEC = AvroCodec()
PATHS = ("model/v1", "model/v2", "model/v3")


def _record(kind: str, decision_id: str, goal: str, path: str, ms: int, score: float) -> bytes:
    return CODEC.encode(
        "RouteEvent",
        {
            "kind": kind,
            "decision_id": decision_id,
            "tenant": "bench",
            "goal": goal,
            "path": path,
            "forced": False,
            "fallback": False,
            "cost": 1.0,
            "latency_ms": 20.0,
            "score": score,
            "source": "api",
            "time_ms": ms,
        },
    )


def _produce(settings: Settings, goal: str, n: int, spread_ms: int, seed: int) -> None:
    topic = Topics.for_namespace(settings.topic_namespace).routing
    producer = make_producer(settings)
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    rates = (0.9, 0.8, 0.6)
    for i in range(n):
        d = str(uuid.uuid4())
        k = i % len(PATHS)
        ms = now - int(rng.integers(0, spread_ms)) if spread_ms else now
        score = float(rng.random() < rates[k])
        for kind in ("decision", "outcome"):
            while True:
                try:
                    producer.produce(topic, _record(kind, d, goal, PATHS[k], ms, score), d.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(60)


def _counted(r: redis.Redis, keys: RouteKeys, goal: str) -> int:
    return sum(int(r.hget(keys.post("bench", goal, p), "n") or 0) for p in PATHS)


def _wait_counted(r: redis.Redis, keys: RouteKeys, goal: str, n: int, timeout: float) -> float:
    """Seconds from the first counted outcome to the n-th."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        c = _counted(r, keys, goal)
        if c and first is None:
            first = time.perf_counter()
        if c >= n:
            return time.perf_counter() - (first or time.perf_counter())
        time.sleep(0.02)
    raise RuntimeError(f"only {_counted(r, keys, goal)} of {n} outcomes counted")


async def _decide(base: str, key: str, rate: float, seconds: float) -> tuple[list[float], int]:
    body = {"goal": "bench", "candidates": [{"path": p, "cost": 1.0} for p in PATHS]}
    latencies: list[float] = []
    fallbacks = 0
    n = int(rate * seconds)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=30
    ) as client:

        async def one() -> None:
            nonlocal fallbacks
            started = time.perf_counter()
            r = await client.post("/api/route/decide", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"decide answered {r.status_code}: {r.text[:200]}")
            fallbacks += r.json()["fallback"]

        tasks = []
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return latencies, fallbacks


@app.command()
def main(rate: float = 2_000, seconds: float = 3, outcomes: int = 40_000, port: int = 0) -> None:
    """Print decide p50/p99 at ``rate``/s, router outcomes/s and Redis bytes per path."""
    home = Path(tempfile.mkdtemp(prefix="caliber-bench-redis-"))
    redis_port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(home),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = bench_settings().model_copy(
            update={"redis_url": f"redis://127.0.0.1:{redis_port}/0"}
        )
        _run(base, rate, seconds, outcomes, port)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(base_settings: Settings, rate: float, seconds: float, outcomes: int, port: int) -> None:
    with scratch_database(base_settings, prefix="caliber_benchrouter") as settings:
        join_identity(settings)  # its own Redis and database join the namespace's stack
        keys = RouteKeys(settings.redis_prefix)
        r = redis_client.sync_client(settings.redis_dsn)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        logs = Settings().logs_dir
        # Outcomes/s: the topic is filled first, then one worker drains it.
        _produce(settings, "bench", outcomes, 0, 1)
        cpu0 = 0.0
        router = start_service(
            "router", settings, logs / "router-bench.log", CALIBER_METRICS_PORT="0"
        )
        try:
            spent = _wait_counted(r, keys, "bench", outcomes, 600)
            cpu = cpu_seconds(router.pid) - cpu0
            print(
                f"router: {outcomes:,} decisions + {outcomes:,} outcomes counted in {spent:.1f} s "
                f"= {outcomes / spent:,.0f} outcomes/s ({2 * outcomes / spent:,.0f} records/s), "
                f"one process, cpu {cpu:.1f} s, peak RSS {peak_rss_mb(router.pid):.0f} MB"
            )
            # Memory: a path with outcomes on every hour and day it keeps.
            _produce(settings, "memory", 3 * 24 * 31, 31 * DAY_MS, 2)
            _wait_counted(r, keys, "memory", 3 * 24 * 31, 300)
            per_path = []
            for p in PATHS:
                ks = [keys.post("bench", "memory", p), keys.hours("bench", "memory", p),
                      keys.days("bench", "memory", p), keys.cost("bench", "memory", p)]  # fmt: skip
                per_path.append(sum(int(r.memory_usage(k) or 0) for k in ks))
            some_decision = next(r.scan_iter(f"{settings.redis_prefix}route:dec:*", count=1000))
            print(
                f"redis: {np.mean(per_path):,.0f} bytes per (goal, path) with 48 hour and "
                f"31 day buckets; {r.memory_usage(some_decision)} bytes per decision record "
                f"(kept for the label horizon, {settings.label_horizon_seconds // 86400} days) "
                f"and about as much per outcome marker; hours span {HOUR_MS // 1000} s"
            )
        finally:
            router.terminate()
            router.wait(30)
        # Decide latency through the gateway, on the 'bench' goal's history.
        pool_key = asyncio.run(_key(settings))
        port = port or _free_port()
        gateway = start_service(
            "gateway",
            settings,
            logs / "gateway-route-bench.log",
            CALIBER_GATEWAY_PORT=str(port),
            CALIBER_GATEWAY_OPEN_METRICS="true",
            CALIBER_LOG_LEVEL="WARNING",
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            asyncio.run(_decide(base, pool_key, 200, 2))  # warm-up
            cpu0 = cpu_seconds(gateway.pid)
            lat, fallbacks = asyncio.run(_decide(base, pool_key, rate, seconds))
            p50, p99 = np.percentile(lat, [50, 99])
            achieved = len(lat) / seconds
            text = httpx.get(base + "/metrics", timeout=10).text
            decide_only = "\n".join(
                line for line in text.splitlines() if 'route="/api/route/decide"' in line
            )
            name = "caliber_gateway_request_seconds"
            s50, s99 = (histogram_quantile(decide_only, name, q) * 1000 for q in (0.5, 0.99))
            print(
                f"decide in the gateway (its request histogram, warm-up included): "
                f"p50 {s50:.1f} ms, p99 {s99:.1f} ms"
            )
            print(
                f"decide: {len(lat):,} decisions offered at {rate:,.0f}/s ({achieved:,.0f}/s "
                f"answered over {seconds:.0f} s): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"{fallbacks} fallbacks, gateway cpu {cpu_seconds(gateway.pid) - cpu0:.1f} s "
                "(load generator on the same cores)"
            )
        finally:
            gateway.terminate()
            gateway.wait(30)


async def _key(settings: Settings) -> str:
    import asyncpg

    pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        return await create_key(pool, "bench", ["producer", "viewer"])
    finally:
        await pool.close()


if __name__ == "__main__":
    app()
