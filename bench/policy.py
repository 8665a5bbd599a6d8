"""Produce → decision latency at a steady rate, on the real stack.

``python -m bench.policy --rate 2000 --seconds 30`` registers one model version,
starts ingest and policy, sends single InferenceEvents to <ns>.inference.raw at the given
rate (event time = send time) and reads the decisions back in a separate process with a
read_committed consumer. Latency of an event = the moment its decision is readable minus
its event time (milliseconds; event times are whole milliseconds, so figures read up to
1 ms high). ``--direct`` skips ingest: it sends PredictionBatch messages of the events of
each 5 ms tick straight to <ns>.predictions, which measures the policy hop alone.
``--rollout shadow`` (or ``canary``) registers the version with an active temperature map
and a second one beside it (canary: deciding 10 % of events), ``--rollout active`` with the
active map alone: the cost of running a candidate is the difference.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from simulator.producer import Pacer, event_records
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    histogram_quantile,
    peak_rss_mb,
    scrape,
    start_service,
)

app = typer.Typer(add_completion=False)

TICK_SECONDS = 0.005


def _read_back(
    servers: str, topics: list[str], partitions: int, key: bytes, conn: Connection
) -> None:
    """In its own process: for every event of the model version ``key``, when its
    prediction became readable, when the policy decided it and when the decision became
    readable. Sends ``{event_id: (event ms, prediction seen, decided, decision seen)}``."""
    codec = AvroCodec()
    settings = Settings(kafka_bootstrap=servers)
    consumer = Consumer(consumer_config(settings, "bench-reader", **{"fetch.wait.max.ms": 2}))
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)]
    )
    consumer.consume(1, timeout=1.0)
    conn.send("ready")
    predicted: dict[str, float] = {}
    decided: dict[str, tuple[float, float, float]] = {}
    stop_at: float | None = None
    while stop_at is None or time.monotonic() < stop_at:
        if stop_at is None and conn.poll():
            conn.recv()  # the producer is done: drain for a few more seconds
            stop_at = time.monotonic() + 5.0
        # poll() returns as soon as a message is there; consume(timeout=0) then drains what
        # else has arrived (a consume with a timeout would wait for a full batch).
        first = consumer.poll(0.05)
        seen = time.time() * 1000
        if first is None:
            continue
        for m in [first, *consumer.consume(10_000, timeout=0)]:
            if m.error() is not None or m.key() != key:
                continue
            d = codec.decode(m.value() or b"")
            if not isinstance(d, Decoded):
                continue
            if d.name == "PredictionBatch":
                predicted.update(dict.fromkeys(d.record["event_ids"], seen))
                continue
            preds = d.record["predictions"]
            at = float(d.record["decided_at_ms"])
            for eid, t in zip(preds["event_ids"], preds["event_time_ms"], strict=True):
                decided[eid] = (float(t), at, seen)
    consumer.close()
    conn.send(
        {
            eid: (t, predicted.get(eid, float("nan")), at, seen)
            for eid, (t, at, seen) in decided.items()
        }
    )


ACTIVE_MAP = {"format": 1, "kind": "temperature", "input": "confidence",
              "params": {"beta": 0.8, "temperature": 1.25}}  # fmt: skip
CANDIDATE_MAP = {"format": 1, "kind": "temperature", "input": "confidence",
                 "params": {"beta": 0.6, "temperature": 1.0 / 0.6}}  # fmt: skip


def _calibrators(rollout: str) -> dict[str, Any]:
    """Registry fields: ``none`` (identity), ``active`` (a temperature map), ``shadow`` or
    ``canary`` (that map with a second temperature map beside it, canary at 10 %)."""
    if rollout == "none":
        return {}
    fields: dict[str, Any] = {
        "calibrator_version": "temperature-active",
        "calibrator": json.dumps(ACTIVE_MAP),
    }
    if rollout in ("shadow", "canary"):
        fields.update(
            candidate_version="temperature-candidate",
            candidate_calibrator=json.dumps(CANDIDATE_MAP),
            rollout_stage=rollout,
            canary_share=0.1 if rollout == "canary" else 0.0,
        )
    return fields


def _register(
    settings: Settings, topics: Topics, spec: ModelSpec, threshold: float, rollout: str = "none"
) -> None:
    now = int(time.time() * 1000)
    record = {
        "id": 1,
        "tenant": spec.tenant,
        "name": spec.name,
        "version": spec.version,
        "stage": "production",
        "parent_id": None,
        "abstain_threshold": threshold,
        "calibrator_version": "identity",
        "calibrator": None,
        "created_at_ms": now,
        "updated_at_ms": now,
        **_calibrators(rollout),
    }
    producer = make_producer(settings)
    producer.produce(
        topics.model_updates,
        AvroCodec().encode("ModelVersion", record),
        model_key(spec.tenant, spec.name, spec.version).encode(),
    )
    producer.flush(10)


def _percentiles(values: np.ndarray) -> str:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"p50 {p50:6.1f}  p90 {p90:6.1f}  p99 {p99:6.1f}  max {values.max():6.1f} ms"


@app.command()
def main(
    rate: float = 2_000,
    seconds: float = 30,
    settle: float = 3,
    direct: bool = typer.Option(False, help="PredictionBatch straight to <ns>.predictions"),
    verbose: bool = typer.Option(False, help="also print latency per second of the run"),
    env: list[str] = typer.Option([], help="KEY=VALUE setting for the workers (repeatable)"),
    rollout: str = typer.Option(
        "none", help="none | active (a temperature map) | shadow | canary (a second map beside)"
    ),
) -> None:
    """Steady traffic through ingest → policy; print latency percentiles and memory."""
    settings = bench_settings()
    topics = Topics.for_namespace(settings.topic_namespace)
    spec = ModelSpec(name="latency", version="v1", numeric_features=4)
    if rollout not in ("none", "active", "shadow", "canary"):
        raise typer.BadParameter(f"--rollout must be none, active, shadow or canary: {rollout!r}")
    _register(settings, topics, spec, threshold=0.7, rollout=rollout)
    log_dir = Settings().logs_dir
    services = ["policy"] if direct else ["ingest", "policy"]
    ports = {"ingest": "0", "policy": str(_free_port())}
    extra = dict(item.split("=", 1) for item in env)
    workers = {
        n: start_service(
            n, settings, log_dir / f"{n}-bench.log", **{**extra, "CALIBER_METRICS_PORT": ports[n]}
        )
        for n in services
    }
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    reader = ctx.Process(
        target=_read_back,
        args=(
            settings.kafka_servers,
            [topics.predictions, topics.decisions],
            settings.topic_partitions,
            model_key(spec.tenant, spec.name, spec.version).encode(),
            there,
        ),
    )
    reader.start()
    here.recv()
    codec = AvroCodec()
    producer = make_producer(settings, **{"linger.ms": 1})
    _warm_up(settings, topics, codec, producer, spec, direct)

    n = int(rate * seconds)
    gen = generate(spec, n, seed=1, start_ms=0)
    records = list(event_records(gen.predictions))
    per_tick = max(1, round(rate * TICK_SECONDS))
    key = gen.predictions.key.encode()
    pacer = Pacer(rate)
    started = time.monotonic()
    for i in range(0, n, per_tick):
        now = int(time.time() * 1000)
        if direct:
            cols = gen.predictions.take(np.arange(i, min(i + per_tick, n)))
            cols.event_time_ms[:] = now
            producer.produce(
                topics.predictions, codec.encode("PredictionBatch", cols.to_record()), key
            )
        else:
            for rec in records[i : i + per_tick]:
                rec["event_time_ms"] = now
                producer.produce(topics.inference_raw, codec.encode("InferenceEvent", rec), key)
        producer.poll(0)
        pacer.sent(per_tick)
    sent_for = time.monotonic() - started
    producer.flush(30)
    here.send("done")
    times = np.array(list(here.recv().values())).reshape(-1, 4)
    reader.join(30)
    event_ms, predicted_ms, decided_ms, seen_ms = times.T

    path = "policy alone (PredictionBatch → decisions)" if direct else "ingest → policy"
    print(f"{path}: {n:,} events sent at {n / sent_for:,.0f}/s for {sent_for:.1f} s")
    t0 = event_ms.min() + settle * 1000 if len(event_ms) else 0
    steady = event_ms >= t0
    span = (seen_ms[steady].max() - seen_ms[steady].min()) / 1000 if steady.any() else 0
    print(
        f"decided {len(event_ms):,} of {n:,}; steady state (after the first {settle:.0f} s): "
        f"{int(steady.sum()):,} events, {steady.sum() / max(span, 1e-9):,.0f} decisions/s"
    )
    print(f"  event time → decision readable:   {_percentiles((seen_ms - event_ms)[steady])}")
    if not direct:
        ingest_hop = (predicted_ms - event_ms)[steady]
        policy_hop = (seen_ms - predicted_ms)[steady]
        print(f"  event time → prediction readable: {_percentiles(ingest_hop)}")
        print(f"  prediction → decision readable:   {_percentiles(policy_hop)}")
    print(f"  event time → policy decided:      {_percentiles((decided_ms - event_ms)[steady])}")
    if verbose:
        second = ((event_ms - event_ms.min()) // 1000).astype(int)
        for sec in np.unique(second):
            lat = (seen_ms - event_ms)[second == sec]
            print(
                f"    second {sec:>3}: p50 {np.percentile(lat, 50):6.1f}  max {lat.max():6.1f} ms"
            )
    text = scrape(int(ports["policy"]))
    b50, b99 = (histogram_quantile(text, "caliber_policy_batch_seconds", q) for q in (0.5, 0.99))
    print(f"  policy batch (fetch → commit):  p50 {b50 * 1000:.1f} ms  p99 {b99 * 1000:.1f} ms")
    for name, proc in workers.items():
        cpu = cpu_seconds(proc.pid) / n * 1000
        print(
            f"{name:<7} peak RSS {peak_rss_mb(proc.pid):.0f} MB, CPU {cpu:.3f} s per 1,000 events"
        )
        proc.terminate()
    for proc in workers.values():
        proc.wait(30)


def _warm_up(
    settings: Settings,
    topics: Topics,
    codec: AvroCodec,
    producer: Any,
    spec: ModelSpec,
    direct: bool,
) -> None:
    """Send events of another model until one is decided: both workers are then running."""
    warm = ModelSpec(name="warm-up", version="v1")
    probe = Consumer(consumer_config(settings, f"{settings.topic_namespace}-warm-up"))
    probe.subscribe([topics.decisions])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            gen = generate(warm, 1, seed=int(time.monotonic()), start_ms=int(time.time() * 1000))
            if direct:
                value = codec.encode("PredictionBatch", gen.predictions.to_record())
                producer.produce(topics.predictions, value, gen.predictions.key.encode())
            else:
                (rec,) = event_records(gen.predictions)
                producer.produce(topics.inference_raw, codec.encode("InferenceEvent", rec))
            producer.flush(5)
            for m in probe.consume(100, timeout=1.0):
                if m.error() is None:
                    time.sleep(1.0)  # let the first transactions and group joins settle
                    return
        raise SystemExit("no decision within 120 s: are the workers running? see their logs")
    finally:
        probe.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    app()
