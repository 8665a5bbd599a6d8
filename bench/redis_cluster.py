"""The aggregator's Redis work on one Redis against a 3-master Redis Cluster, back to back.

``python -m bench.redis_cluster`` builds decisions and labels of several model versions in
memory (as a consumer hands them over), feeds them to the aggregator's processing step
(windows, joins, the offset fence per hash tag) in process, once against the local stack's
Redis (a fresh key prefix) and once against a Redis Cluster (``--cluster-url``, else a
private 3-master cluster on loopback, started and stopped here), and prints per run:
events/s, latency percentiles of one processed batch, the process's CPU per 1,000 events,
and the Redis memory and key count per model version.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import typer
from confluent_kafka import Message

from services.aggregator.processing import AggregatorProcessor
from services.aggregator.store import AggregatorStore
from services.policy.processing import decide
from shared.contracts.batches import LabelColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY
from shared.runtime import redis_client
from shared.runtime.redis_client import hash_tag
from shared.settings import Settings
from simulator.generator import ModelSpec, generate

app = typer.Typer(add_completion=False)
CODEC = AvroCodec()
TOPICS = Topics.for_namespace("bench")


def build(models: int, events: int, batch: int) -> tuple[list[Message], int]:
    """(messages in consumer order, events they hold: predictions + labels)."""
    start_ms = int(time.time() * 1000) - 3_600_000
    per_model: list[list[Message]] = []
    total = 0
    for p in range(models):
        gen = generate(ModelSpec(name=f"m{p}", version="1", tenant="bench"), events, p, start_ms)
        cols = gen.predictions
        out = []
        for i, s in enumerate(range(0, events, batch)):
            rows = np.arange(s, min(s + batch, events))
            d = decide(cols.take(rows), 0.7, IDENTITY, "registry", start_ms)
            out.append(
                Message(topic=TOPICS.decisions, partition=p, offset=i,
                        value=CODEC.encode("DecisionBatch", d.to_record()))
            )  # fmt: skip
            labeled = rows[gen.labeled[rows]]
            labels = LabelColumns(
                cols.tenant, cols.model_name, cols.model_version,
                [cols.event_ids[j] for j in labeled.tolist()],
                [gen.ground_truth[j] for j in labeled.tolist()],
                ["feed"] * len(labeled), gen.label_time_ms[labeled],
            )  # fmt: skip
            out.append(
                Message(topic=TOPICS.labels, partition=p, offset=i,
                        value=CODEC.encode("LabelBatch", labels.to_record()))
            )  # fmt: skip
            total += len(rows) + len(labeled)
        per_model.append(out)
    merged = [m for group in zip(*per_model, strict=True) for m in group]
    return merged, total


async def run(url: str, prefix: str, messages: list[Message], per_call: int) -> dict[str, Any]:
    client = redis_client.async_client(url)
    try:
        proc = AggregatorProcessor(TOPICS, CODEC, AggregatorStore(client, prefix, 7 * 86400))
        latencies = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(0, len(messages), per_call):
            began = time.perf_counter()
            await proc(messages[i : i + per_call])
            latencies.append(time.perf_counter() - began)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        per_tag: dict[str | None, list[int]] = {}
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for k in keys:
            entry = per_tag.setdefault(hash_tag(k.decode()), [0, 0])
            entry[0] += 1
            entry[1] += int(await client.memory_usage(k) or 0)
            await client.unlink(k)
        return {"wall": wall, "cpu": cpu, "lat": np.array(latencies), "tags": per_tag}
    finally:
        await client.aclose()


@contextlib.contextmanager
def cluster(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.integration.redis_cluster import redis_cluster

    with redis_cluster() as c:
        yield c.url


@app.command()
def main(
    models: int = typer.Option(4, help="model versions"),
    events: int = typer.Option(25_000, help="predictions per model version"),
    batch: int = typer.Option(500, help="events per decision message"),
    per_call: int = typer.Option(8, help="messages per processing call (one consumed batch)"),
    cluster_url: str | None = typer.Option(None, help="an existing Redis Cluster"),
) -> None:
    messages, total = build(models, events, batch)
    print(f"{len(messages)} messages, {total:,} events (predictions + labels), {models} versions")
    single = Settings().redis_dsn
    with cluster(cluster_url) as url:
        for name, target in (("one Redis", single), ("Redis Cluster (3 masters)", url)):
            r = asyncio.run(run(target, f"bench-{uuid.uuid4().hex[:8]}:", messages, per_call))
            lat = r["lat"] * 1000
            model_tags = {t: v for t, v in r["tags"].items() if t and "/" in t}
            keys = np.mean([v[0] for v in model_tags.values()])
            size = np.mean([v[1] for v in model_tags.values()])
            print(
                f"{name}: {total / r['wall']:,.0f} events/s; batch of {per_call} messages "
                f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
                f"CPU {1000 * r['cpu'] / total * 1000:.2f} ms per 1,000 events; per model "
                f"version {keys:.0f} keys, {size / 1e3:.1f} kB"
            )


if __name__ == "__main__":
    app()
