"""Recorder throughput: rows/s into PostgreSQL from pre-loaded decisions.

``python -m bench.recorder --events 100000`` writes DecisionBatch messages to a
fresh namespace, starts one recorder and times until every row is in PostgreSQL.
"""

from __future__ import annotations

import time

import numpy as np
import psycopg
import typer

from services.policy.processing import decide
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.generator import Generated, ModelSpec, generate
from tooling.benchmarking import bench_settings, peak_rss_mb, scratch_database, start_service

app = typer.Typer(add_completion=False)


@app.command()
def main(events: int = 100_000, batch: int = 500) -> None:
    """Write into a scratch database: the main one's predictions are never touched."""
    with scratch_database(bench_settings(), prefix="caliber_bench") as settings:
        _run(settings, events, batch)


def _count(conn: psycopg.Connection[tuple[int]], model: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM predictions WHERE model_name = %s", (model,)
    ).fetchone()
    return int(row[0]) if row else 0


def _run(settings: Settings, events: int, batch: int) -> None:
    """Start the recorder and let it write one warm-up batch (so start-up and the consumer
    group join are behind it), then time from the first produced decision to the last row
    visible in PostgreSQL."""
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    producer = make_producer(settings)

    def make(model: str, n: int) -> Generated:
        spec = ModelSpec(name=model, version="v1", numeric_features=4, categorical_features=1)
        return generate(spec, n, seed=len(model), start_ms=int(time.time() * 1000))

    def send(gen: Generated) -> None:
        n = len(gen.predictions)
        for start in range(0, n, batch):
            cols = gen.predictions.take(np.arange(start, min(start + batch, n)))
            d = decide(cols, 0.7, IDENTITY, "registry", int(time.time() * 1000))
            producer.produce(
                topics.decisions, codec.encode("DecisionBatch", d.to_record()), cols.key.encode()
            )
        producer.flush(60)

    proc = start_service(
        "recorder", settings, Settings().logs_dir / "recorder-bench.log", CALIBER_METRICS_PORT="0"
    )
    with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
        rows = make("rows", events)
        send(make("warmup", batch))
        deadline = time.monotonic() + 120
        while _count(conn, "warmup") < batch and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        send(rows)
        count = 0
        while count < events and time.monotonic() - started < 600:
            time.sleep(0.05)
            count = _count(conn, "rows")
    took = time.monotonic() - started
    print(
        f"recorder wrote {count} rows in {took:.2f} s (first decision produced to last row "
        f"visible): {count / took:,.0f} rows/s"
    )
    print(f"recorder peak RSS {peak_rss_mb(proc.pid):.0f} MB")
    proc.terminate()
    proc.wait(30)


if __name__ == "__main__":
    app()
