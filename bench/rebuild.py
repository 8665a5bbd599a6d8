"""Rebuild benchmark: how fast PostgreSQL and Redis are rebuilt from the Kafka log.

``python -m bench.rebuild --events 100000`` on a fresh topic namespace, Redis prefix and
scratch database of the local stack (or of the stack the ``CALIBER_*`` settings name):

1. writes ``--events`` predictions of one model version (8 numeric features, three classes)
   to ``predictions``, their decisions to ``decisions`` and a label for each to ``labels``,
   in 500-event batch messages, as ingest and the policy would have;
2. runs ``rebuild postgres`` and then ``rebuild redis`` on them and prints, per store, the
   traffic events (predictions, each with its decision and label) rebuilt per second, the
   log rows read per second, and what that rate means for 1 million events and for a week
   at 1,000 events/s (604.8 million), extrapolated linearly (both rebuilds are a single
   pass whose cost per batch does not grow with what was rebuilt before).

The full run is ``--events 1000000`` (about 10–20 minutes on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import typer

from bench.aggregator import produce as produce_decisions_and_labels
from services.drift.settings import DriftSettings
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.generator import Generated, ModelSpec, generate
from tooling.benchmarking import bench_settings, join_identity, peak_rss_mb, scratch_database
from tooling.rebuild import Rebuilt, rebuild_postgres, rebuild_redis

app = typer.Typer(add_completion=False)
WEEK_EVENTS = 7 * 24 * 3600 * 1000


def produce_predictions(settings: Settings, gen: Generated, batch: int) -> None:
    topics = Topics.for_namespace(settings.topic_namespace)
    codec, producer = AvroCodec(), make_producer(settings)
    cols = gen.predictions
    key = cols.key.encode()
    for start in range(0, len(cols), batch):
        part = cols.take(np.arange(start, min(start + batch, len(cols))))
        producer.produce(topics.predictions, codec.encode("PredictionBatch", part.to_record()), key)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("Kafka did not acknowledge every benchmark message")


def _line(result: Rebuilt, traffic: int, cpu_s: float) -> str:
    per_s = traffic / result.seconds
    return (
        f"{result.store:<9} {result.seconds:7.1f} s  {per_s:9,.0f} events/s  "
        f"({result.rate:,.0f} log rows/s; {cpu_s / traffic * 1000:.3f} CPU s of the rebuild "
        f"process per 1,000 events)  1 M events: {1e6 / per_s / 60:5.1f} min  "
        f"a week at 1,000/s: {WEEK_EVENTS / per_s / 3600:5.1f} h"
    )


@app.command()
def main(
    events: int = typer.Option(100_000, min=1_000, help="predictions to rebuild from"),
    batch: int = typer.Option(500, min=1, help="events per batch message"),
) -> None:
    base = bench_settings(Settings())
    with scratch_database(base, prefix="caliber_bench_rebuild") as settings:
        join_identity(settings)  # its own namespace, prefix and database: one identity
        spec = ModelSpec(name="rebuild", version="1", tenant="bench", numeric_features=8)
        started = time.monotonic()
        gen = generate(spec, events, seed=7, start_ms=int(time.time() * 1000) - 3_600_000)
        produce_predictions(settings, gen, batch)
        produce_decisions_and_labels(settings, gen, batch)
        typer.echo(f"wrote {events:,} events ×3 topics in {time.monotonic() - started:.1f} s")
        cpu = time.process_time()
        pg = asyncio.run(rebuild_postgres(settings))
        pg_cpu, cpu = time.process_time() - cpu, time.process_time()
        assert pg.counts["predictions"] == events, pg.counts
        rd = asyncio.run(rebuild_redis(DriftSettings(**settings.model_dump())))
        rd_cpu = time.process_time() - cpu
        assert rd.counts["prediction ids (dedupe)"] == events, rd.counts
    typer.echo(f"load average while measuring: {os.getloadavg()[0]:.1f}")
    typer.echo(_line(pg, events, pg_cpu))
    typer.echo(_line(rd, events, rd_cpu))
    typer.echo(f"peak RSS of this process {peak_rss_mb(os.getpid()):.0f} MB")


if __name__ == "__main__":
    app()
