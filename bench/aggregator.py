"""Aggregator benchmark: labeled events/s, calibration latency, Redis memory per day.

``python -m bench.aggregator`` on a fresh namespace:

1. writes a day of one model version's traffic (decisions, then every label 1 min to 3 h
   after its prediction) to the aggregator's input topics, starts one aggregator and times
   it from its first counted event until every label is joined;
2. measures, with ``MEMORY USAGE``, the window state that day left in Redis (minute, hour
   and day buckets) and the per-event join state (``pred:`` records, kept for the label
   horizon);
3. copies the day's hour buckets onto the six days before it, so a 7-day window reads 168
   full hours, and times ``GET /api/calibration?window=7d`` through one gateway, and the
   before-labels answers (``/api/models/{id}/performance-estimate`` and
   ``/threshold-advice``) on the same windows.

``--no-estimate`` runs the aggregator without the before-labels sums
(``CALIBER_ESTIMATE_ENABLED=false``): run it and the default back to back to see their cost.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
import typer

from shared.contracts.batches import DecisionColumns, LabelColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.runtime.redis_client import tagged
from shared.settings import Settings
from shared.windows.calibration import GRANULARITY, RETENTION_S
from simulator.generator import Generated, ModelSpec, generate
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    peak_rss_mb,
    scrape,
    scratch_database,
    service_env,
    start_service,
)

app = typer.Typer(add_completion=False)
DAY_MS = 86_400_000
TENANT = "bench"


def produce(settings: Settings, gen: Generated, batch: int) -> None:
    """Decisions in ``batch``-event messages, then the labels in label-time order."""
    topics = Topics.for_namespace(settings.topic_namespace)
    codec, producer = AvroCodec(), make_producer(settings)
    cols, n = gen.predictions, len(gen.predictions)
    key = cols.key.encode()
    now = int(time.time() * 1000)
    for start in range(0, n, batch):
        part = cols.take(np.arange(start, min(start + batch, n)))
        d = DecisionColumns(
            part, part.confidences, part.confidences < 0.7, 0.7, "default", "identity", now
        )
        producer.produce(topics.decisions, codec.encode("DecisionBatch", d.to_record()), key)
        producer.poll(0)
    order = np.argsort(gen.label_time_ms, kind="stable")
    for start in range(0, n, batch):
        r = order[start : start + batch].tolist()
        labels = LabelColumns(
            tenant=cols.tenant,
            model_name=cols.model_name,
            model_version=cols.model_version,
            event_ids=[cols.event_ids[i] for i in r],
            ground_truths=[gen.ground_truth[i] for i in r],
            sources=["feed"] * len(r),
            label_time_ms=gen.label_time_ms[r],
        )
        producer.produce(topics.labels, codec.encode("LabelBatch", labels.to_record()), key)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("Kafka did not acknowledge every benchmark message")


def memory(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """(keys, bytes) of every key matching ``pattern``, MEMORY USAGE with all samples."""
    keys = list(client.scan_iter(match=pattern, count=5000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return len(keys), sum(int(b or 0) for b in pipe.execute())


def sampled_memory(client: redis.Redis, pattern: str, sample: int = 2000) -> tuple[int, float]:
    """(keys, mean bytes per key) from the first ``sample`` keys."""
    keys = list(client.scan_iter(match=pattern, count=5000))
    pipe = client.pipeline(transaction=False)
    for k in keys[:sample]:
        pipe.memory_usage(k, samples=0)
    sizes = [int(b or 0) for b in pipe.execute()]
    return len(keys), (sum(sizes) / len(sizes) if sizes else 0.0)


def fill_week(client: redis.Redis, prefix: str, model: str) -> int:
    """Copy the day's hour buckets onto the six days before it and rebuild the day buckets
    from them (a day bucket holds what its hours hold); returns the hours copied."""
    made = 0
    hour, day = GRANULARITY["h"], GRANULARITY["d"]
    starts: set[int] = set()
    for suffix in ("", "f", "q"):
        pattern = f"{prefix}agg:h{suffix}:{tagged(model)}:*"
        for src in list(client.scan_iter(match=pattern, count=1000)):
            start = int(src.decode().rsplit(":", 1)[1])
            for k in range(1, 7):
                dst = f"{prefix}agg:h{suffix}:{tagged(model)}:{start - k * day}"
                copied = int(client.copy(src, dst, replace=True))
                made += copied if suffix == "" else 0
                client.expire(dst, RETENTION_S["h"])
                starts.add(start - k * day)
            starts.add(start)
    for d in {s // day * day for s in starts}:
        for suffix in ("", "f", "q"):
            pipe = client.pipeline(transaction=False)
            for h in range(d, d + day, hour):
                pipe.hgetall(f"{prefix}agg:h{suffix}:{tagged(model)}:{h}")
            summed: dict[str | bytes | bytearray | memoryview | int | float, int] = {}
            for fields in pipe.execute():
                for f, v in fields.items():
                    summed[f] = summed.get(f, 0) + int(v)
            dst = f"{prefix}agg:d{suffix}:{tagged(model)}:{d}"
            client.delete(dst)
            if summed:
                client.hset(dst, mapping=summed)
                client.expire(dst, RETENTION_S["d"])
    return made


async def time_calibration(
    base: str, key: str, model_id: int, window: str, requests: int, path: str = "/api/calibration"
) -> list[float]:
    latencies = []
    params: dict[str, str | int | float] = {"window": window}
    if path == "/api/calibration":
        params["model_version_id"] = model_id
    else:
        path = path.format(id=model_id)
        if path.endswith("threshold-advice"):
            params.update(target_risk=0.02, delta=0.05)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}) as client:
        for i in range(requests + 20):
            started = time.perf_counter()
            r = await client.get(path, params=params)
            took = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
            if i >= 20:  # warm-up: connection, caches
                latencies.append(took)
    return latencies


def register(settings: Settings, base: str, name: str) -> tuple[str, int]:
    """An admin key (from ``caliber keys create``) and the id of the registered model."""
    out = subprocess.run(
        [sys.executable, "-m", "tooling.cli", "keys", "create", "--tenant", TENANT],
        env=service_env(settings),
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip().splitlines()[-1]
    r = httpx.post(
        f"{base}/api/models", json={"name": name, "version": "v1"}, headers={"X-API-Key": key}
    )
    r.raise_for_status()
    return key, int(r.json()["id"])


def wait_health(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the gateway at {base} did not become healthy")


def wait_labeled(
    client: redis.Redis, prefix: str, gen: Generated, timeout: float = 600
) -> tuple[int, float]:
    """(labeled events counted, seconds from the first counted batch to the last)."""
    model, n = gen.predictions.key, len(gen.predictions)
    days = np.unique((gen.predictions.event_time_ms // 1000) // GRANULARITY["d"]) * GRANULARITY["d"]
    keys = [f"{prefix}agg:d:{tagged(model)}:{d}" for d in days.tolist()]
    started = time.monotonic()
    first, at_first, done = None, 0, 0
    while time.monotonic() - started < timeout:
        done = sum(int(client.hget(k, "L") or 0) for k in keys)
        if done and first is None:
            first, at_first = time.monotonic(), done
        if done >= n:
            break
        time.sleep(0.05)
    return done - at_first, time.monotonic() - (first or started)


def run_aggregator(
    settings: Settings, client: redis.Redis, gen: Generated, batch: int, what: str, port: int
) -> None:
    """Write ``gen`` and time the running aggregator on it; print its figures."""
    t0 = time.monotonic()
    produce(settings, gen, batch)
    n = len(gen.predictions)
    print(f"{what}: wrote {n:,} decisions and {n:,} labels in {time.monotonic() - t0:.1f} s")
    before = scrape(port)
    counted, took = wait_labeled(client, settings.redis_prefix, gen)
    after = scrape(port)
    busy = sample(after, "caliber_aggregator_batch_seconds_sum") - sample(
        before, "caliber_aggregator_batch_seconds_sum"
    )
    print(
        f"  {counted / max(took, 1e-9):,.0f} labeled events/s (each a decision and a label; "
        f"{counted:,} from the first counted batch to the last in {took:.1f} s; "
        f"{n / max(busy, 1e-9):,.0f}/s of batch time)"
    )


@app.command()
def main(
    events: int = 500_000,
    day_events: int = 500_000,
    batch: int = 500,
    requests: int = 500,
    gateway_port: int = 8098,
    estimate: bool = True,
    gateway: bool = True,
) -> None:
    """Print labeled events/s, /api/calibration latency percentiles, Redis bytes per model
    version per day and peak RSS."""
    settings = bench_settings()
    prefix = settings.redis_prefix
    logs = Settings().logs_dir
    now = int(time.time() * 1000)
    live = generate(
        ModelSpec(name=f"live-{uuid.uuid4().hex[:8]}", version="v1", tenant=TENANT),
        events,
        seed=20,
        start_ms=now - 10 * 60_000,
        rate_per_s=events / 600,
    )
    name = f"day-{uuid.uuid4().hex[:8]}"
    spec = ModelSpec(
        name=name, version="v1", tenant=TENANT, late_label_share=1.0, overconfidence=0.05
    )
    day = generate(spec, day_events, seed=21, start_ms=now - DAY_MS, rate_per_s=day_events / 86400)
    model = day.predictions.key

    client = redis_client.sync_client(settings.redis_dsn, socket_timeout=60)
    port = free_port()
    agg = start_service(
        "aggregator",
        settings,
        logs / "aggregator-bench.log",
        CALIBER_METRICS_PORT=str(port),
        CALIBER_ESTIMATE_ENABLED=str(estimate).lower(),
    )
    try:
        wait_metrics(port)
        print(
            "aggregator, one process, pre-loaded input, before-labels sums "
            f"{'on' if estimate else 'off'}:"
        )
        run_aggregator(settings, client, live, batch, "live traffic (the last 10 minutes)", port)
        run_aggregator(settings, client, day, batch, "a day of traffic replayed at once", port)
        print(
            f"  aggregator cpu {cpu_seconds(agg.pid):.1f} s, peak RSS {peak_rss_mb(agg.pid):.0f} MB"
        )
    finally:
        agg.terminate()
        agg.wait(30)

    total = hour_day = 0
    for g in GRANULARITY:
        for suffix, what in (("", "counters"), ("f", "fine histogram"), ("q", "calibrated fine")):
            n, size = memory(client, f"{prefix}agg:{g}{suffix}:{tagged(model)}:*")
            total += size
            hour_day += size if g != "m" else 0
            print(
                f"  {g} buckets, {what:<14}: {n:5d} keys, {size / 1e6:6.2f} MB "
                f"({size / max(n, 1) / 1e3:.1f} kB each)"
            )
    print(
        f"Redis per model version per day of traffic ({day_events:,} predictions): "
        f"{hour_day / 1e6:.2f} MB of hour and day buckets (kept 15 and 400 days); the minute "
        f"buckets, {(total - hour_day) / 1e6:.2f} MB here, live "
        f"{RETENTION_S['m'] // 3600} h, so at most {(total - hour_day) / 8e6:.2f} MB of them "
        f"exist at once"
    )
    _, per_pred = sampled_memory(client, f"{prefix}agg:pred:*")
    print(
        f"join state: {per_pred:.0f} B per prediction, kept for the label horizon "
        f"({settings.label_horizon_seconds // 86400} d): {day_events * per_pred / 1e6:.1f} MB "
        f"per day of these {day_events:,} predictions"
    )

    copies = fill_week(client, prefix, model)
    try:
        if gateway:
            with scratch_database(settings) as db:
                time_gateway(db, name, gateway_port, requests, copies, logs)
    finally:
        for k in client.scan_iter(match=f"{prefix}*", count=5000):
            client.unlink(k)
        client.close()


def time_gateway(
    settings: Settings, name: str, port: int, requests: int, copies: int, logs: Path
) -> None:
    gw = start_service(
        "gateway",
        settings,
        logs / "gateway-bench.log",
        CALIBER_GATEWAY_PORT=str(port),
        CALIBER_METRICS_PORT="0",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_health(base)
        key, model_id = register(settings, base, name)
        print(f"GET /api/calibration, one client, {requests} requests ({copies} hours copied):")
        for window in ("1h", "24h", "7d"):
            lat = asyncio.run(time_calibration(base, key, model_id, window, requests))
            p50, p99, top = np.percentile(lat, [50, 99, 100])
            print(f"  window {window:>3}: p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  max {top:5.1f} ms")
        for path in (
            "/api/models/{id}/performance-estimate",
            "/api/models/{id}/threshold-advice",
        ):
            print(f"GET {path}, one client, {requests} requests:")
            for window in ("24h", "7d"):
                lat = asyncio.run(time_calibration(base, key, model_id, window, requests, path))
                p50, p99, top = np.percentile(lat, [50, 99, 100])
                print(
                    f"  window {window:>3}: p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  max {top:5.1f} ms"
                )
        print(f"gateway peak RSS {peak_rss_mb(gw.pid):.0f} MB")
    finally:
        gw.terminate()
        gw.wait(30)


def wait_metrics(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the aggregator's /metrics on port {port} did not answer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(text: str, name: str) -> float:
    """The sum of ``name``'s samples in a /metrics page (0 when absent)."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


if __name__ == "__main__":
    app()
