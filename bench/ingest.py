"""Ingest throughput on the real stack: one worker process, pre-loaded input.

Run with ``python -m bench.ingest`` (``make bench``) after ``caliber stack up``.
Prints sustained events/s, batch latency p50/p99 and the worker's peak memory.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from simulator.producer import produce
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    histogram_quantile,
    peak_rss_mb,
    scrape,
    start_service,
)

app = typer.Typer(add_completion=False)
METRICS_PORT = 9191


def _count_outputs(
    settings: Settings, topic: str, expect: int, timeout: float
) -> tuple[float, float]:
    """Read the output until ``expect`` events arrived; (first arrival, last arrival)."""
    from confluent_kafka import Consumer

    codec = AvroCodec()
    consumer = Consumer(consumer_config(settings, f"{settings.topic_namespace}-bench-reader"))
    consumer.subscribe([topic])
    seen, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while seen < expect and time.monotonic() < deadline:
            for m in consumer.consume(1_000, timeout=0.2):
                if m.error() is not None:
                    continue
                decoded = codec.decode(m.value())
                n = len(decoded.record["event_ids"])  # type: ignore[union-attr]
                if n and not first:
                    first = time.monotonic()
                seen += n
                last = time.monotonic()
    finally:
        consumer.close()
    if seen < expect:
        raise RuntimeError(f"only {seen} of {expect} events came out within {timeout:.0f} s")
    return first, last


def run_one(form: str, events: int, log_dir: Path) -> dict[str, float]:
    settings = bench_settings()
    topics = Topics.for_namespace(settings.topic_namespace)
    specs = [
        ModelSpec(name="bench", version=f"v{i}", numeric_features=6, categorical_features=2)
        for i in range(4)
    ]
    gens = [
        generate(s, events // len(specs), seed=i, start_ms=int(time.time() * 1000) - 3_600_000)
        for i, s in enumerate(specs)
    ]
    produce(make_producer(settings), topics, AvroCodec(), gens, form=form, labels_on_events=False)
    total = sum(len(g.predictions) for g in gens)
    worker = start_service(
        "ingest",
        settings,
        log_dir / f"ingest-bench-{form}.log",
        CALIBER_METRICS_PORT=str(METRICS_PORT),
    )
    started = time.monotonic()
    try:
        first, last = _count_outputs(settings, topics.predictions, total, timeout=600)
        text = scrape(METRICS_PORT)
        result = {
            "events": float(total),
            "startup_s": first - started,
            "events_per_s": total / max(last - first, 1e-9),
            "batch_p50_ms": histogram_quantile(text, "caliber_ingest_batch_seconds", 0.5) * 1000,
            "batch_p99_ms": histogram_quantile(text, "caliber_ingest_batch_seconds", 0.99) * 1000,
            "peak_rss_mb": peak_rss_mb(worker.pid),
            "cpu_s_per_1k": cpu_seconds(worker.pid) / total * 1000,
        }
    finally:
        worker.terminate()
        worker.wait(30)
    return result


@app.command()
def main(
    events: int = typer.Option(
        200_000, help="events per run (8 features each: 6 numeric, 2 categorical)"
    ),
    forms: list[str] = typer.Option(["single", "batch"], help="input forms to measure"),
) -> None:
    """Measure one ingest worker on pre-loaded single-event and batch input."""
    log_dir = Settings().logs_dir
    header = ("form", "events", "events/s", "batch p50", "batch p99", "peak RSS", "CPU s/1k")
    print("{:<7} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9}".format(*header))
    for form in forms:
        r = run_one(form, events, log_dir)
        print(
            f"{form:<7} {int(r['events']):>8} {r['events_per_s']:>10,.0f} "
            f"{r['batch_p50_ms']:>8.1f}ms {r['batch_p99_ms']:>8.1f}ms "
            f"{r['peak_rss_mb']:>7.0f}MB {r['cpu_s_per_1k']:>9.3f}"
        )


if __name__ == "__main__":
    app()
