"""Drift worker throughput on the real stack: one process, pre-loaded predictions.

Run with ``python -m bench.drift`` (``make bench``) after ``caliber stack up``.
One model version with 20 numeric and 5 categorical features, in 500-event batch messages
on a fresh namespace; the first ``CALIBER_DRIFT_REFERENCE_EVENTS`` (5,000) form the
reference profile and the rest are counted into the default 10-minute window (events 10 ms
apart). Prints events/s, batch latency percentiles (fetch → Redis apply → offsets
committed), the worker's peak RSS, the Redis memory its state takes, and the time to
evaluate every score of the model version (read the window's buckets + score all parts).
Then, with the worker caught up, a second model version is sent at a steady 5,000
events/s and the produce → counted latency of each batch is measured.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time

import numpy as np
import typer
from confluent_kafka import Producer

from services.drift.evaluate import Evaluator
from services.drift.processing import ProfileCache
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from shared.windows.drift import DriftKeys
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    histogram_quantile,
    peak_rss_mb,
    scrape,
    start_service,
)

app = typer.Typer(add_completion=False)
METRICS_PORT = 9194
STEP_MS = 10


def make_batch(
    rng: np.random.Generator,
    version: str,
    lo: int,
    n: int,
    start_ms: int,
    numeric: int,
    categorical: int,
) -> PredictionColumns:
    return PredictionColumns(
        tenant="bench",
        model_name="drift",
        model_version=version,
        event_ids=[f"e{i}" for i in range(lo, lo + n)],
        event_time_ms=start_ms + STEP_MS * np.arange(lo, lo + n, dtype=np.int64),
        predicted_labels=rng.choice(["a", "b", "c", "d"], size=n).tolist(),
        confidences=rng.beta(8, 2, size=n),
        numeric_features={f"x{j}": rng.normal(size=n) for j in range(numeric)},
        categorical_features={
            f"c{j}": rng.choice(["p", "q", "r", "s", "t", "u"], size=n).tolist()
            for j in range(categorical)
        },
    )


def produce(producer: Producer, topic: str, codec: AvroCodec, cols: PredictionColumns) -> None:
    while True:
        try:
            producer.produce(topic, codec.encode("PredictionBatch", cols.to_record()), cols.key)
            return
        except BufferError:
            producer.poll(0.05)


def preload(settings: Settings, events: int, numeric: int, categorical: int) -> str:
    """Write ``events`` predictions of one model version; returns its key."""
    topic = Topics.for_namespace(settings.topic_namespace).predictions
    codec = AvroCodec()
    producer: Producer = make_producer(settings)
    rng = np.random.default_rng(7)
    start = int(time.time() * 1000) - events * STEP_MS
    key = ""
    for lo in range(0, events, 500):
        cols = make_batch(rng, "v1", lo, min(500, events - lo), start, numeric, categorical)
        key = cols.key
        produce(producer, topic, codec, cols)
    producer.flush(60)
    return key


def steady_latency(
    settings: Settings, rate: int, seconds: float, numeric: int, categorical: int
) -> list[float]:
    """Produce → counted latency of 500-event batches sent at ``rate`` events/s: the time
    from a batch's send until the worker's watermark in Redis reaches its last event (the
    watermark moves in the same fenced write as the counts)."""
    topic = Topics.for_namespace(settings.topic_namespace).predictions
    codec = AvroCodec()
    producer: Producer = make_producer(settings)
    client = redis_client.sync_client(settings.redis_dsn)
    watermarks = DriftKeys(settings.redis_prefix).watermarks
    rng = np.random.default_rng(8)
    start = int(time.time() * 1000)
    pending: list[tuple[float, int]] = []
    out: list[float] = []
    key = ""
    sent = 0
    began = time.monotonic()
    try:
        while time.monotonic() - began < seconds or pending:
            due = began + sent / rate
            if time.monotonic() >= due and time.monotonic() - began < seconds:
                cols = make_batch(rng, "steady", sent, 500, start, numeric, categorical)
                key = cols.key
                produce(producer, topic, codec, cols)
                producer.poll(0)
                pending.append((time.monotonic(), int(cols.event_time_ms[-1])))
                sent += 500
            wm = client.hget(watermarks, key) if key else None
            now = time.monotonic()
            while pending and wm is not None and int(wm) >= pending[0][1]:
                out.append(now - pending.pop(0)[0])
            if now - began > seconds + 60:
                raise RuntimeError(f"{len(pending)} batches not counted within 60 s")
            time.sleep(0.002)
    finally:
        producer.flush(10)
        client.close()
    return out


def counted(text: str) -> float:
    return sum(
        float(v)
        for v in re.findall(r"^caliber_drift_events_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    )


async def evaluation_seconds(settings: DriftSettings, model: str, rounds: int) -> list[float]:
    client = redis_client.async_client(settings.redis_dsn)
    try:
        store = DriftStore(client, settings.redis_prefix)
        evaluator = Evaluator(settings, store, ProfileCache(), None, None, AvroCodec())  # type: ignore[arg-type]
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            assert await evaluator.scores(model) is not None
            times.append(time.perf_counter() - started)
        return times
    finally:
        await client.aclose()


def redis_bytes(settings: Settings, delete: bool = True) -> int:
    """Memory of the worker's Redis keys (then removed, unless ``delete`` is False)."""
    client = redis_client.sync_client(settings.redis_dsn)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}drift:*", count=1000))
        total = sum(int(client.memory_usage(k) or 0) for k in keys)
        if delete and keys:
            client.unlink(*keys)
        return total
    finally:
        client.close()


@app.command()
def main(
    events: int = typer.Option(200_000, help="events to pre-load"),
    numeric: int = typer.Option(20, help="numeric features per event"),
    categorical: int = typer.Option(5, help="categorical features per event"),
) -> None:
    """Measure one drift worker on pre-loaded batch input."""
    settings = DriftSettings.model_validate(bench_settings().model_dump())
    model = preload(settings, events, numeric, categorical)
    worker = start_service(
        "drift",
        settings,
        settings.logs_dir / "drift-bench.log",
        CALIBER_METRICS_PORT=str(METRICS_PORT),
        CALIBER_DRIFT_EVAL_SECONDS="2",
        # 50 messages = 25,000 events per batch: several batches, so the rate is measured.
        CALIBER_DRIFT_MAX_MESSAGES="50",
    )
    try:
        first = last = 0.0
        at_first = 0.0
        deadline = time.monotonic() + 600
        text = ""
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                text = scrape(METRICS_PORT)
            except OSError:
                continue
            n = counted(text)
            if n and not first:
                first, at_first = time.monotonic(), n
            if n >= events:
                last = time.monotonic()
                break
        if not last:
            raise RuntimeError(f"only {counted(text):.0f} of {events} events counted in time")
        rss = peak_rss_mb(worker.pid)
        cpu = cpu_seconds(worker.pid)
        time.sleep(2.5)  # at least one evaluation of the full window by the worker
        text = scrape(METRICS_PORT)
        state_mib = redis_bytes(settings, delete=False) / 2**20  # one model version's state
        evals = asyncio.run(evaluation_seconds(settings, model, 20))
        steady = steady_latency(settings, 5_000, 15.0, numeric, categorical)
        rss = peak_rss_mb(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    redis_bytes(settings)
    batch = "caliber_drift_batch_seconds"
    # The rate runs from the first batch's count to the last, so start-up and the first
    # batch (fetched while the consumer group forms) are not in it.
    rate = (events - at_first) / max(last - first, 1e-9)
    print(
        f"drift worker, one process: {events:,} events, "
        f"{numeric} numeric + {categorical} categorical features"
    )
    print(
        f"  throughput       {rate:,.0f} events/s ({cpu / events * 1000:.3f} CPU s per 1k events)"
    )
    print(
        "  batch latency    "
        + ", ".join(
            f"p{int(q * 100)} {histogram_quantile(text, batch, q) * 1000:.1f} ms"
            for q in (0.5, 0.9, 0.99)
        )
    )
    q = np.quantile(np.asarray(steady) * 1000, [0.5, 0.9, 0.99])
    print(
        f"  steady 5,000 events/s: produce -> counted p50 {q[0]:.0f} ms, p90 {q[1]:.0f} ms, "
        f"p99 {q[2]:.0f} ms, max {max(steady) * 1000:.0f} ms ({len(steady)} batches of 500)"
    )
    print(f"  peak RSS         {rss:.0f} MB; Redis state {state_mib:.1f} MiB per model version")
    print(
        f"  evaluation       {statistics.median(evals) * 1000:.1f} ms median, "
        f"{max(evals) * 1000:.1f} ms max for all {numeric + categorical + 2} parts of one model "
        "version (window buckets read from Redis + every score)"
    )


if __name__ == "__main__":
    app()
