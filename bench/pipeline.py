"""The whole pipeline under load on the real stack: how far Caliber goes on this machine.

``python -m bench.pipeline`` starts ingest, policy, aggregator, drift, recorder
and the gateway (with one ``/ws/live`` client) on a fresh topic namespace, Redis prefix and
scratch database, registers four model versions, and then:

1. **Rate steps.** It sends PredictionBatch messages (the form the SDK and simulator send;
   event time = send time, one message per model version every 10 ms) to
   caliber.inference.raw at each rate of ``--rates`` for ``--step-seconds``, and labels for
   half of the events, as LabelBatch messages, a second later. When a step ends it measures
   how long every worker's consumer group takes to reach the end of its input (committed
   offsets at the high watermarks). A rate is *sustained* when that drain takes at most
   ``--max-drain-seconds``: a pipeline that falls behind by a share ``x`` of the rate ends
   a step of T seconds with ``x·T`` seconds of backlog, so a 20 s step detects an overload
   of 10 % or more. It stops at the first rate that is not sustained.
2. **Latency and freshness at half the highest sustained rate.** Produce → decision
   latency is the time a decision becomes readable (read_committed, in a reader process of
   its own) minus its event time. Metric freshness is measured with probe events: a labeled
   prediction of a probe version, then ``GET /api/calibration`` polled until it counts it.

The report (Markdown and JSON, in ``--out``) also holds CPU seconds per 1,000 events of
each service at the highest sustained rate and each process's peak memory. The load
generator, the reader and the WebSocket client share the machine's cores with the
pipeline, as a client on the same host would.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from services.gateway.auth import create_key
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from simulator.gateway_client import GatewayClient, wait_ready
from simulator.generator import ModelSpec, generate
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    peak_rss_mb,
    scratch_database,
    start_service,
)

app = typer.Typer(add_completion=False)

WORKERS = ("ingest", "policy", "aggregator", "drift", "recorder")
TICK_S = 0.01
VERSIONS = ("v1", "v2", "v3", "v4")
TENANT = "load"
OTHERS = "Kafka, Redis, PostgreSQL, the kernel"
MODEL = "load"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- decision reader process


def _read_decisions(servers: str, topic: str, partitions: int, conn: Connection) -> None:
    """In its own process: (event time, first readable) in ms of every decision, until told
    to stop; then sends both arrays."""
    codec = AvroCodec()
    settings = Settings(kafka_bootstrap=servers)
    consumer = Consumer(
        consumer_config(
            settings, f"bench-reader-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 2}
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    consumer.consume(1, timeout=1.0)
    conn.send("ready")
    event_ms: list[np.ndarray] = []
    seen_ms: list[np.ndarray] = []
    stop_at: float | None = None
    while stop_at is None or time.monotonic() < stop_at:
        if stop_at is None and conn.poll():
            conn.recv()
            stop_at = time.monotonic() + 3.0
        first = consumer.poll(0.05)
        seen = time.time() * 1000
        if first is None:
            continue
        for m in [first, *consumer.consume(10_000, timeout=0)]:
            if m.error() is not None:
                continue
            d = codec.decode(m.value() or b"")
            if isinstance(d, Decoded) and d.name == "DecisionBatch":
                t = np.asarray(d.record["predictions"]["event_time_ms"], dtype=np.int64)
                event_ms.append(t)
                seen_ms.append(np.full(t.size, seen))
    consumer.close()
    empty = np.zeros(0)
    conn.send(
        (
            np.concatenate(event_ms) if event_ms else empty,
            np.concatenate(seen_ms) if seen_ms else empty,
        )
    )


# ---------------------------------------------------------------- lag of the worker groups


class LagProbe:
    """Messages between each worker group's committed offsets and the high watermarks."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        ns = settings.topic_namespace
        inputs = {
            "ingest": [topics.inference_raw, topics.labels_raw],
            "policy": [topics.predictions],
            "aggregator": [topics.decisions, topics.labels],
            "drift": [topics.predictions],
            "recorder": [topics.decisions, topics.labels, topics.alerts],
        }
        parts = settings.topic_partitions
        self.partitions = {
            w: [TopicPartition(t, p) for t in ts for p in range(parts)] for w, ts in inputs.items()
        }
        self.groups = {w: Consumer(consumer_config(settings, f"{ns}-{w}")) for w in inputs}

    def lag(self) -> dict[str, int]:
        """Per worker; a partition behind by one only is counted as caught up, since a
        transaction's commit marker takes an offset that no consumer commits past."""
        out = {}
        for w, consumer in self.groups.items():
            committed = consumer.committed(self.partitions[w], timeout=10)
            total = 0
            for tp in committed:
                _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                pos = tp.offset if tp.offset >= 0 else 0
                behind = max(high - pos, 0)
                total += behind if behind > 1 else 0
            out[w] = total
        return out

    def close(self) -> None:
        for c in self.groups.values():
            c.close()


# ---------------------------------------------------------------- load generation


@dataclass(slots=True)
class Step:
    rate: int
    seconds: float
    events: int = 0
    labels: int = 0
    started_ms: int = 0
    ended_ms: int = 0
    drain_seconds: float = 0.0
    peak_lag: dict[str, int] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    sustained: bool = False
    machine_busy: float = 0.0
    """Share of the machine's CPU time (all cores, every process) busy during the step."""


class Load:
    """Sends paced PredictionBatch messages for the model versions, and labels later."""

    def __init__(self, settings: Settings, topics: Topics, seed: int) -> None:
        self.producer: Producer = make_producer(settings, **{"linger.ms": 2})
        self.topics = topics
        self.codec = AvroCodec()
        self.seed = seed

    def _pool(self, version: str, n: int) -> PredictionColumns:
        spec = ModelSpec(
            name=MODEL,
            version=version,
            tenant=TENANT,
            overconfidence=0.05,
            numeric_features=8,
            categorical_features=2,
        )
        self.seed += 1
        return generate(spec, n, self.seed, 0).predictions

    def run(self, step: Step, probe: Any = None) -> None:
        n_per_version = int(step.rate * step.seconds / len(VERSIONS)) + 1000
        pools = {v: self._pool(v, n_per_version) for v in VERSIONS}
        used = dict.fromkeys(VERSIONS, 0)
        pending: list[tuple[float, LabelColumns]] = []
        per_tick = step.rate * TICK_S / len(VERSIONS)
        owed = 0.0
        started = time.monotonic()
        step.started_ms = int(time.time() * 1000)
        tick = 0
        while (elapsed := time.monotonic() - started) < step.seconds:
            owed += per_tick
            k = int(owed)
            owed -= k
            now_ms = int(time.time() * 1000)
            if k:
                for v in VERSIONS:
                    rows = np.arange(used[v], min(used[v] + k, n_per_version))
                    used[v] += len(rows)
                    cols = pools[v].take(rows)
                    cols.event_time_ms = np.full(len(rows), now_ms, dtype=np.int64)
                    self._send(
                        self.topics.inference_raw, cols.key, "PredictionBatch", cols.to_record()
                    )
                    step.events += len(rows)
                    half = rows[::2]
                    pending.append((time.monotonic() + 1.0, _labels(pools[v], half, now_ms)))
            while pending and pending[0][0] <= time.monotonic():
                _, labels = pending.pop(0)
                self._send(
                    self.topics.labels_raw, labels.key or "", "LabelBatch", labels.to_record()
                )
                step.labels += len(labels)
            self.producer.poll(0)
            tick += 1
            ahead = tick * TICK_S - elapsed
            if ahead > 0:
                time.sleep(ahead)
        for _, labels in pending:
            self._send(self.topics.labels_raw, labels.key or "", "LabelBatch", labels.to_record())
            step.labels += len(labels)
        self.producer.flush(30)
        step.ended_ms = int(time.time() * 1000)

    def _send(self, topic: str, key: str, name: str, record: dict[str, Any]) -> None:
        value = self.codec.encode(name, record)
        while True:
            try:
                self.producer.produce(topic, value, key.encode())
                return
            except BufferError:
                self.producer.poll(0.01)


def _labels(pool: PredictionColumns, rows: np.ndarray, now_ms: int) -> LabelColumns:
    return LabelColumns(
        tenant=pool.tenant,
        model_name=pool.model_name,
        model_version=pool.model_version,
        event_ids=[pool.event_ids[i] for i in rows.tolist()],
        ground_truths=[pool.predicted_labels[i] for i in rows.tolist()],
        sources=["feed"] * len(rows),
        label_time_ms=np.full(len(rows), now_ms + 1000, dtype=np.int64),
    )


# ---------------------------------------------------------------- freshness probes


class Freshness(threading.Thread):
    """Every ``every`` seconds: one labeled probe prediction, then /api/calibration polled
    until it counts it; records event time → visible, ms."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        client: GatewayClient,
        mid: int,
        every: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.load = Load(settings, topics, seed=991)
        self.client, self.mid, self.every, self.stop_event = client, mid, every, stop
        self.samples_ms: list[float] = []

    def run(self) -> None:
        spec = ModelSpec(name=MODEL, version="probe", tenant=TENANT)
        pool = generate(spec, 1000, 4242, 0).predictions
        for i in range(1000):
            if self.stop_event.is_set():
                return
            now_ms = int(time.time() * 1000)
            cols = pool.take([i])
            cols.event_time_ms = np.array([now_ms], dtype=np.int64)
            self.load._send(
                self.load.topics.inference_raw, cols.key, "PredictionBatch", cols.to_record()
            )
            labels = _labels(pool, np.array([i]), now_ms)
            labels.label_time_ms = np.array([now_ms], dtype=np.int64)
            self.load._send(self.load.topics.labels_raw, cols.key, "LabelBatch", labels.to_record())
            self.load.producer.flush(5)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.client.calibration(self.mid, "5m")["n_labeled"] >= i + 1:
                    self.samples_ms.append(time.time() * 1000 - now_ms)
                    break
                time.sleep(0.01)
            self.stop_event.wait(self.every)


# ---------------------------------------------------------------- the WebSocket client


class LiveClient(threading.Thread):
    """Counts the decisions ``/ws/live`` pushes for one model version."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.decisions = 0
        self.closed: str | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(self.url, max_size=None) as ws:
            while not self.stop_event.is_set():
                try:
                    message = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    self.closed = str(exc)
                    return
                if '"type": "decision"' in message or '"type":"decision"' in message:
                    self.decisions += 1


# ---------------------------------------------------------------- the run


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _drain(lags: LagProbe, limit: float, verbose: bool = False) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    peak: dict[str, int] = {}
    while True:
        lag = lags.lag()
        for w, v in lag.items():
            peak[w] = max(peak.get(w, 0), v)
        if all(v == 0 for v in lag.values()):
            return time.monotonic() - started, peak
        if verbose:
            print(f"  lag {lag}", flush=True)
        if time.monotonic() - started > limit:
            return float("inf"), peak
        time.sleep(0.2)


@app.command()
def main(
    rates: str = typer.Option("2000,3000,4000,5000,6000,7000,8000,10000", help="events/s steps"),
    step_seconds: float = typer.Option(20.0, min=5),
    max_drain_seconds: float = typer.Option(2.0, min=0.1),
    latency_seconds: float = typer.Option(30.0, min=5),
    out: Path = typer.Option(Path("reports"), help="folder of pipeline.md and pipeline.json"),
    verbose: bool = typer.Option(False, help="print every worker's lag while a step drains"),
) -> None:
    """Run the rate steps, then latency and freshness at half the highest sustained rate."""
    with scratch_database(bench_settings(), prefix="caliber_bench") as settings:
        report = _run(
            settings,
            [int(r) for r in rates.split(",")],
            step_seconds,
            max_drain_seconds,
            latency_seconds,
            verbose,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(report, indent=2, default=float))
    md = _markdown(report)
    (out / "pipeline.md").write_text(md)
    print(md)
    print(f"written: {out / 'pipeline.md'}, {out / 'pipeline.json'}")


def _run(
    settings: Settings,
    rates: list[int],
    step_s: float,
    max_drain: float,
    latency_s: float,
    verbose: bool,
) -> dict[str, Any]:
    topics = Topics.for_namespace(settings.topic_namespace)
    logs = settings.logs_dir / f"bench-{settings.topic_namespace}"
    key = asyncio.run(_admin_key(settings))
    port = _free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as cleanup:
        cleanup.callback(_stop, procs)
        procs["gateway"] = start_service(
            "gateway",
            settings,
            logs / "gateway.log",
            CALIBER_GATEWAY_PORT=str(port),
            CALIBER_METRICS_PORT="0",
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        client = cleanup.enter_context(GatewayClient(base, key))
        versions = (*VERSIONS, "probe")
        ids = {v: int(client.ensure_version(MODEL, v, "staging")["id"]) for v in versions}
        for w in WORKERS:
            procs[w] = start_service(
                w,
                settings,
                logs / f"{w}.log",
                CALIBER_METRICS_PORT="0",
                CALIBER_POLICY_CATCH_UP_SECONDS="3",
            )
        live = LiveClient(
            f"ws://127.0.0.1:{port}/ws/live?api_key={key}&model_version_id={ids['v1']}"
        )
        live.start()
        cleanup.callback(live.stop_event.set)
        lags = LagProbe(settings, topics)
        cleanup.callback(lags.close)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        reader = ctx.Process(
            target=_read_decisions,
            args=(settings.kafka_servers, topics.decisions, settings.topic_partitions, child),
            daemon=True,
        )
        reader.start()
        cleanup.callback(reader.kill)
        if not parent.poll(60) or parent.recv() != "ready":
            raise RuntimeError("the decision reader did not start")
        load = Load(settings, topics, seed=1)
        # Warm-up: start-up, group joins and the drift worker's reference window behind us.
        warm = Step(rate=2000, seconds=10)
        load.run(warm)
        _drain(lags, 60, verbose)
        steps: list[Step] = []
        best: Step | None = None
        for rate in rates:
            step = Step(rate=rate, seconds=step_s)
            pids = {w: p.pid for w, p in procs.items()}
            pids.update({"load generator": os.getpid(), "decision reader": int(reader.pid or 0)})
            cpu0 = {w: cpu_seconds(pid) for w, pid in pids.items()}
            busy0, total0 = _cpu_times()
            load.run(step)
            step.drain_seconds, step.peak_lag = _drain(lags, max(30.0, step_s), verbose)
            busy1, total1 = _cpu_times()
            step.machine_busy = (busy1 - busy0) / max(total1 - total0, 1)
            step.cpu_seconds = {w: cpu_seconds(pid) - cpu0[w] for w, pid in pids.items()}
            machine_s = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
            step.cpu_seconds[OTHERS] = max(machine_s - sum(step.cpu_seconds.values()), 0.0)
            step.sustained = step.drain_seconds <= max_drain
            steps.append(step)
            verdict = "sustained" if step.sustained else "NOT sustained"
            print(
                f"rate {rate:>6}/s: sent {step.events} events, {step.labels} labels; "
                f"drained in {step.drain_seconds:.1f} s -> {verdict}",
                flush=True,
            )
            if not step.sustained:
                _drain(lags, 300, verbose)
                break
            best = step
        half = Step(rate=max(int((best.rate if best else rates[0]) / 2), 100), seconds=latency_s)
        stop = threading.Event()
        fresh = Freshness(settings, topics, client, ids["probe"], 1.0, stop)
        fresh.start()
        load.run(half)
        stop.set()
        fresh.join(35)
        _drain(lags, 60, verbose)
        parent.send("stop")
        if not parent.poll(60):
            raise RuntimeError("the decision reader sent nothing back")
        event_ms, seen_ms = parent.recv()
        live.stop_event.set()
        live.join(5)
        memory = {w: peak_rss_mb(p.pid) for w, p in procs.items()}
    in_half = (event_ms >= half.started_ms) & (event_ms <= half.ended_ms)
    latency = (seen_ms - event_ms)[in_half]
    fresh_ms = np.asarray(fresh.samples_ms)
    total_events = warm.events + sum(s.events for s in steps) + half.events
    cpu_per_k = (
        {w: round(1000 * c / best.events, 3) for w, c in best.cpu_seconds.items()} if best else {}
    )
    return {
        "machine": {"cores": mp.cpu_count()},
        "highest_sustained_rate": best.rate if best else None,
        "steps": [asdict(s) for s in steps],
        "latency_rate": half.rate,
        "decision_latency_ms": _summary(latency, "events"),
        "freshness_ms": _summary(fresh_ms, "probes"),
        "cpu_seconds_per_1000_events": cpu_per_k,
        "peak_rss_mb": {w: round(v, 1) for w, v in memory.items()},
        "decisions_read": int(event_ms.size),
        "events_sent": total_events,
        "live_feed": {"decisions_for_v1": live.decisions, "closed": live.closed},
    }


def _summary(values: np.ndarray, what: str) -> dict[str, float]:
    return {
        what: int(values.size),
        "p50": _pct(values, 50),
        "p99": _pct(values, 99),
        "max": float(values.max()) if values.size else float("nan"),
    }


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def _admin_key(settings: Settings) -> str:
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        return await create_key(conn, TENANT, ["admin"])
    finally:
        await conn.close()


def _markdown(r: dict[str, Any]) -> str:
    lat, fr = r["decision_latency_ms"], r["freshness_ms"]
    lines = [
        "# Caliber pipeline under load",
        "",
        f"Machine: {r['machine']['cores']} cores. Workers: ingest, policy, aggregator, drift, "
        "recorder, gateway (one /ws/live client), one process each.",
        "",
        f"**Highest sustained rate: {r['highest_sustained_rate']} events/s** "
        "(PredictionBatch producers, half the events labeled).",
        "",
        "| rate (events/s) | events | labels | drain after step (s) | machine CPU | sustained |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for s in r["steps"]:
        lines.append(
            f"| {s['rate']} | {s['events']} | {s['labels']} | {s['drain_seconds']:.1f} | "
            f"{s['machine_busy']:.0%} | {'yes' if s['sustained'] else 'no'} |"
        )
    lines += [
        "",
        f"At {r['latency_rate']} events/s (half of it):",
        "",
        f"- produce → decision latency: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {lat['max']:.0f} ms ({lat['events']} events)",
        f"- metric freshness (event time → counted by /api/calibration): p50 {fr['p50']:.0f} ms, "
        f"p99 {fr['p99']:.0f} ms, max {fr['max']:.0f} ms ({fr['probes']} probes)",
        "",
        "| process | CPU s per 1,000 events at the highest sustained rate | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for w, cpu in r["cpu_seconds_per_1000_events"].items():
        mb = r["peak_rss_mb"].get(w)
        lines.append(f"| {w} | {cpu:.3f} | {'' if mb is None else f'{mb:.0f}'} |")
    lf = r["live_feed"]
    lines += [
        "",
        f"Live feed: {lf['decisions_for_v1']} decisions of v1 pushed to the client"
        + (f"; closed: {lf['closed']}" if lf["closed"] else ""),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    app()
