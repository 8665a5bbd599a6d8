"""Recorder throughput: rows/s into PostgreSQL from pre-loaded decisions.

``python -m services.recorder.bench --events 100000`` writes DecisionBatch messages to a
fresh namespace, starts one recorder and times until every row is in PostgreSQL.
"""

from __future__ import annotations

import time

import numpy as np
import psycopg
import typer

from services.policy.processing import decide
from shared.benchmarking import bench_settings, peak_rss_mb, start_service
from shared.calibration_map import IDENTITY
from shared.codec import AvroCodec
from shared.db import migrate
from shared.kafka import make_producer
from shared.settings import Settings
from shared.topics import Topics
from simulator.generator import ModelSpec, generate

app = typer.Typer(add_completion=False)


@app.command()
def main(events: int = 100_000, batch: int = 500) -> None:
    settings = bench_settings()
    migrate(settings.postgres_url)
    with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE predictions, pending_labels")
    topics = Topics.for_namespace(settings.topic_namespace)
    gen = generate(
        ModelSpec(name="rows", version="v1", numeric_features=4, categorical_features=1),
        events,
        seed=3,
        start_ms=int(time.time() * 1000),
    )
    codec = AvroCodec()
    producer = make_producer(settings)
    for start in range(0, events, batch):
        cols = gen.predictions.take(np.arange(start, min(start + batch, events)))
        d = decide(cols, 0.7, IDENTITY, "registry", int(time.time() * 1000))
        producer.produce(
            topics.decisions, codec.encode("DecisionBatch", d.to_record()), cols.key.encode()
        )
    producer.flush(60)
    proc = start_service(
        "recorder", settings, Settings().logs_dir / "recorder-bench.log", CALIBER_METRICS_PORT="0"
    )
    started = time.monotonic()
    first = None
    with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
        while True:
            count = conn.execute(
                "SELECT count(*) FROM predictions WHERE model_name = 'rows'"
            ).fetchone()[0]  # type: ignore[index]
            if count and first is None:
                first = time.monotonic()
            if count >= events or time.monotonic() - started > 600:
                break
            time.sleep(0.2)
    done = time.monotonic()
    took = done - (first or started)
    rate = count / max(took, 1e-9)
    print(f"recorder wrote {count} rows in {took:.1f} s: {rate:,.0f} rows/s")
    print(f"recorder peak RSS {peak_rss_mb(proc.pid):.0f} MB")
    proc.terminate()
    proc.wait(30)


if __name__ == "__main__":
    app()
