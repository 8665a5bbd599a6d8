"""The Python client's cost: its batch producer over Kafka and REST, and local calibration.

``python -m bench.client`` sends ``--events`` predictions (8 numeric features) through
``caliber_client.Caliber`` to Kafka on a fresh topic namespace, then (``--rest``) the same
number through a gateway it starts, and prints events/s until every event is acknowledged,
the latency of one ``send()`` call (p50/p99/max: what the model server's request pays),
this process's CPU and peak RSS, and the cost of calibrating one event in-process.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid

import httpx
import numpy as np
import typer
from caliber_client import Caliber, CalibrationMap

from bench.gateway import _setup
from shared.settings import Settings
from tooling.benchmarking import bench_settings, start_service

app = typer.Typer(add_completion=False)
FEATURES = [f"f{i}" for i in range(8)]


def _drive(client: Caliber, events: int, model: tuple[str, str]) -> tuple[float, list[float]]:
    rng = np.random.default_rng(3)
    confidences = rng.uniform(0.5, 1.0, events).tolist()
    values = rng.normal(size=(events, len(FEATURES))).tolist()
    calls: list[float] = []
    started = time.perf_counter()
    for i in range(events):
        t = time.perf_counter()
        client.send(
            *model, "yes", confidences[i], features=dict(zip(FEATURES, values[i], strict=True))
        )
        calls.append((time.perf_counter() - t) * 1e6)
    client.flush(120)
    return time.perf_counter() - started, calls


def _report(name: str, events: int, seconds: float, calls: list[float], cpu: float) -> None:
    p50, p99 = np.percentile(calls, [50, 99])
    print(
        f"{name:<6} {events / seconds:>10,.0f} events/s (all acknowledged)  send() p50 "
        f"{p50:.1f} µs, p99 {p99:.1f} µs, max {max(calls) / 1000:.1f} ms; "
        f"{cpu / events * 1000:.3f} CPU s per 1,000 events"
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _calibration_cost() -> None:
    m = CalibrationMap("t", {"kind": "temperature", "input": "confidence", "params": {"beta": 0.7}})
    one = np.asarray([0.8])
    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        m.apply(one)
    single = (time.perf_counter() - t) / n * 1e6
    batch = np.random.default_rng(1).uniform(0.5, 1, 500)
    t = time.perf_counter()
    for _ in range(2_000):
        m.apply(batch)
    per_event = (time.perf_counter() - t) / (2_000 * 500) * 1e6
    print(f"calibration (temperature): {single:.1f} µs for one event, "
          f"{per_event:.3f} µs per event in batches of 500")  # fmt: skip


@app.command()
def main(events: int = 100_000, rest: bool = True, port: int = 8098) -> None:
    """Print throughput, send() latency percentiles, CPU and memory of the client."""
    settings = bench_settings()
    cpu0 = _cpu()
    with Caliber(
        tenant="bench",
        kafka_bootstrap=settings.kafka_servers,
        topic_namespace=settings.topic_namespace,
        transport="kafka",
    ) as client:
        seconds, calls = _drive(client, events, ("bench", "v1"))
    _report("kafka", events, seconds, calls, _cpu() - cpu0)
    if rest:
        from shared.db import migrate

        migrate(settings.postgres_url)
        base = f"http://127.0.0.1:{port}"
        proc = start_service(
            "gateway",
            settings,
            Settings().logs_dir / "gateway-client-bench.log",
            CALIBER_GATEWAY_PORT=str(port),
            CALIBER_LOG_LEVEL="WARNING",
        )
        try:
            for _ in range(150):
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            key, _ = asyncio.run(_setup(settings, base))
            version = f"rest-{uuid.uuid4().hex[:8]}"
            r = httpx.post(base + "/api/models", headers={"X-API-Key": key},
                           json={"name": "bench", "version": version})  # fmt: skip
            r.raise_for_status()
            cpu0 = _cpu()
            with Caliber(base, key, transport="rest") as client:
                seconds, calls = _drive(client, events, ("bench", version))
            _report("rest", events, seconds, calls, _cpu() - cpu0)
        finally:
            proc.terminate()
            proc.wait(30)
    _calibration_cost()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"client process peak RSS {peak:.0f} MB (load generator and client are one process)")


if __name__ == "__main__":
    app()
