"""Produce → decision latency at a steady rate, through ingest and policy on the real stack.

``python -m services.policy.bench --rate 2000 --seconds 30`` sends single InferenceEvents at
the given rate (event time = send time) and reads the decisions back; latency is the time
from an event's send to its decision being readable (read_committed).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import typer
from confluent_kafka import Consumer

from shared.benchmarking import bench_settings, cpu_seconds, peak_rss_mb, start_service
from shared.codec import AvroCodec, Decoded
from shared.kafka import consumer_config, make_producer
from shared.settings import Settings
from shared.topics import Topics
from simulator.generator import ModelSpec, generate
from simulator.producer import Pacer, event_records

app = typer.Typer(add_completion=False)


def _read_decisions(
    settings: Settings, topic: str, expect: int, out: dict[str, float], stop: threading.Event
) -> None:
    codec = AvroCodec()
    consumer = Consumer(
        consumer_config(
            settings, f"{settings.topic_namespace}-bench-decisions", **{"fetch.wait.max.ms": 5}
        )
    )
    consumer.subscribe([topic])
    try:
        while len(out) < expect and not stop.is_set():
            for m in consumer.consume(1_000, timeout=0.05):
                if m.error() is not None:
                    continue
                seen = time.time() * 1000
                d = codec.decode(m.value())
                if isinstance(d, Decoded):
                    for eid in d.record["predictions"]["event_ids"]:
                        out[eid] = seen
    finally:
        consumer.close()


@app.command()
def main(
    rate: float = 2_000,
    seconds: float = 30,
    warmup: float = 5,
    settle: float = 3,
    verbose: bool = False,
) -> None:
    """Steady single-event traffic through ingest → policy; print latency percentiles."""
    settings = bench_settings()
    topics = Topics.for_namespace(settings.topic_namespace)
    log_dir = Settings().logs_dir
    workers = {
        n: start_service(n, settings, log_dir / f"{n}-bench.log", CALIBER_METRICS_PORT="0")
        for n in ("ingest", "policy")
    }
    time.sleep(warmup)
    n = int(rate * seconds)
    gen = generate(
        ModelSpec(name="latency", version="v1", numeric_features=4), n, seed=1, start_ms=0
    )
    records = list(event_records(gen.predictions))
    codec = AvroCodec()
    decided: dict[str, float] = {}
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_decisions, args=(settings, topics.decisions, n, decided, stop)
    )
    reader.start()
    producer = make_producer(settings, **{"linger.ms": 1})
    sent_at: dict[str, float] = {}
    pacer = Pacer(rate)
    key = gen.predictions.key.encode()
    for i in range(0, n, 20):
        for rec in records[i : i + 20]:
            now = time.time() * 1000
            rec["event_time_ms"] = int(now)
            sent_at[rec["event_id"]] = now
            producer.produce(topics.inference_raw, codec.encode("InferenceEvent", rec), key)
        producer.poll(0)
        pacer.sent(20)
    producer.flush(30)
    reader.join(timeout=60)
    stop.set()
    # The first seconds include consumer-group joins and first transactions: not steady state.
    t0 = min(sent_at.values()) + settle * 1000
    lat = np.array([decided[e] - t for e, t in sent_at.items() if e in decided and t >= t0])
    print(f"events sent {n} at {rate:,.0f}/s for {seconds:.0f} s; decided {len(decided)}")
    print(f"latency over the {len(lat)} events sent after the first {settle:.0f} s")
    p50, p99 = np.percentile(lat, [50, 99])
    if verbose:
        t0 = min(sent_at.values())
        by_second: dict[int, list[float]] = {}
        for e, t in sent_at.items():
            if e in decided:
                by_second.setdefault(int((t - t0) / 1000), []).append(decided[e] - t)
        for sec, values in sorted(by_second.items()):
            print(
                f"  second {sec:>3}: p50 {np.percentile(values, 50):6.1f}"
                f"  max {max(values):7.1f} ms"
            )
    print(
        f"produce -> decision latency: p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {lat.max():.1f} ms"
    )
    for name, proc in workers.items():
        cpu = cpu_seconds(proc.pid) / n * 1000
        print(
            f"{name:<7} peak RSS {peak_rss_mb(proc.pid):.0f} MB, CPU {cpu:.3f} s per 1,000 events"
        )
        proc.terminate()
    for proc in workers.values():
        proc.wait(30)


if __name__ == "__main__":
    app()
