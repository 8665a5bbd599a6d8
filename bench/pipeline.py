"""The whole pipeline under load on the real stack: how far Caliber goes on this machine.

``python -m bench.pipeline`` first times a fixed CPU-bound loop (20 M additions in
CPython) so runs on different machines, or on one machine under other load, can be
compared; then it starts ingest, policy, aggregator, drift, recorder and the gateway (with
one ``/ws/live`` client) on a fresh topic namespace, Redis prefix and scratch database,
registers four model versions and a probe version, and then:

1. **Rate steps**, lowest first (from 500 events/s, so a sustained rate is always found).
   It sends PredictionBatch messages (the form the SDK and simulator send; event time =
   send time, one message per model version every 10 ms) to caliber.inference.raw at each
   rate of ``--rates`` for ``--step-seconds``, and labels for half of the events, as
   LabelBatch messages, a second later. When a step ends it measures how long every
   worker's consumer group takes to reach the end of its input (committed offsets at the
   high watermarks). A rate is *sustained* when that drain takes at most
   ``--max-drain-seconds``: a pipeline that falls behind by a share ``x`` of the rate ends
   a step of T seconds with ``x·T`` seconds of backlog, so a 20 s step detects an overload
   of 10 % or more. It stops at the first rate that is not sustained, and names the
   process that bounds the rate: one whose busy thread is full, else the largest share of
   a machine whose cores are.
2. **Latency and freshness** at each rate of ``--latency-rates`` (capped at the highest
   sustained). Produce → decision latency is the time a decision becomes readable
   (read_committed, in a reader process of its own) minus its event time. Metric freshness
   is measured with probe events: a labeled prediction of the probe version, then
   ``GET /api/calibration`` polled until it counts it. The decision latency is also split
   where the policy decides (the batch's ``decided_at_ms``): produce → decided covers the
   load generator's send, ingest and the policy; decided → readable the policy's
   transaction commit and the read.
3. **Idle**: nothing produced for ``--idle-seconds``; each process's share of a core; then
   the decision latency and freshness of the first event after the quiet period.

CPU is charged per process: each service, the load generator (this process, with the
WebSocket client and the probes) and the decision reader apart, and Kafka, Redis and
PostgreSQL (its postmaster and every backend) when they run on this host; the rest of the
machine's busy time is the kernel's and other processes'. The report (Markdown and JSON, in
``--out``) holds CPU seconds per 1,000 events at the highest sustained rate, each step's
machine load, and each process's peak memory. The benchmark's own processes share the
machine's cores with the pipeline, as a client on the same host would.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
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
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from bench.processes import Meter, machine_seconds, stack_pids
from services.gateway.auth import create_key
from shared.contracts.avro_wire import long_bytes
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from simulator.gateway_client import GatewayClient, wait_ready
from simulator.generator import ModelSpec, generate
from tooling.benchmarking import bench_settings, peak_rss_mb, scratch_database, start_service
from tooling.stack.kafka_cluster import KafkaCluster
from tooling.stack.redis_cluster import RedisCluster

app = typer.Typer(add_completion=False)

WORKERS = ("ingest", "policy", "aggregator", "drift", "recorder")
TICK_S = 0.01
VERSIONS = ("v1", "v2", "v3", "v4")
TENANT = "load"
MODEL = "load"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- decision reader process


def _read_decisions(servers: str, topic: str, partitions: int, conn: Connection) -> None:
    """In its own process: (event time, decided at, first readable) in ms of every decision,
    until told to stop; then sends the three arrays."""
    codec = AvroCodec()
    settings = Settings(kafka_bootstrap=servers)
    # Read-only (nothing committed or sought): the librdkafka default long poll, as a
    # client that follows the decisions would use; a new decision still answers it at once.
    consumer = Consumer(
        consumer_config(
            settings, f"bench-reader-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 500}
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    consumer.consume(1, timeout=1.0)
    conn.send("ready")
    event_ms: list[np.ndarray] = []
    decided_ms: list[np.ndarray] = []
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
                decided_ms.append(np.full(t.size, d.record["decided_at_ms"], dtype=np.int64))
                seen_ms.append(np.full(t.size, seen))
    consumer.close()
    conn.send(
        tuple(np.concatenate(a) if a else np.zeros(0) for a in (event_ms, decided_ms, seen_ms))
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
    load_average: str = ""


PLACEHOLDER_MS = 1_111_111_111_111
"""The event time of the messages encoded ahead (2005): its varint is as wide as that of any
time from 2005 to 2039, so a send swaps the bytes in place."""


@dataclass(frozen=True, slots=True)
class Stamped:
    """A message encoded ahead, its times the placeholder's varint, ``events`` times."""

    key: bytes
    template: bytes
    placeholder: bytes
    events: int
    payload: bytes = b""
    """The message with its time set (:meth:`stamped`), for labels sent later."""

    @classmethod
    def encode(cls, message: bytes, key: str, events: int, placeholder_ms: int) -> Stamped:
        mark = long_bytes(placeholder_ms)
        # Exactly one varint per event: no other bytes of the message spell it out. (A
        # match across two varints cannot happen: only a varint's last byte is below 0x80.)
        if message.count(mark) != events:
            raise ValueError(f"the placeholder time occurs {message.count(mark)} times")
        return cls(key.encode(), message, mark, events)

    def at(self, ms: int) -> bytes:
        stamp = long_bytes(ms)
        if len(stamp) != len(self.placeholder):
            raise ValueError(f"{ms} ms is not a time between 2005 and 2039")
        return self.template.replace(self.placeholder, stamp)

    def stamped(self, ms: int) -> Stamped:
        return dataclasses.replace(self, payload=self.at(ms))


Plan = list[list[tuple[Stamped, Stamped | None]]]
"""Per tick, per model version: the predictions and the labels of half of them."""


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

    def run(self, step: Step, plan: Plan | None = None) -> None:
        """Send ``step``: every tick, one PredictionBatch per model version (and, a second
        later, the labels of half its events). The messages are encoded before the step
        starts, with a placeholder time that each tick replaces by its own (the bytes of a
        varint, :class:`Stamped`): the generator's own CPU, which the pipeline shares the
        cores with, is then a copy per message, not an encode."""
        plan = self.plan(step) if plan is None else plan
        pending: list[tuple[float, Stamped]] = []
        started = time.monotonic()
        step.started_ms = int(time.time() * 1000)
        tick = 0
        while (elapsed := time.monotonic() - started) < step.seconds and tick < len(plan):
            now_ms = int(time.time() * 1000)
            for predictions, labels in plan[tick]:
                self._produce(self.topics.inference_raw, predictions.key, predictions.at(now_ms))
                step.events += predictions.events
                if labels is not None:
                    pending.append((time.monotonic() + 1.0, labels.stamped(now_ms + 1000)))
            while pending and pending[0][0] <= time.monotonic():
                _, labels = pending.pop(0)
                self._produce(self.topics.labels_raw, labels.key, labels.payload)
                step.labels += labels.events
            self.producer.poll(0)
            tick += 1
            ahead = tick * TICK_S - elapsed
            if ahead > 0:
                time.sleep(ahead)
        for _, labels in pending:
            self._produce(self.topics.labels_raw, labels.key, labels.payload)
            step.labels += labels.events
        self.producer.flush(30)
        step.ended_ms = int(time.time() * 1000)

    def plan(self, step: Step) -> Plan:
        """Per tick, per model version with events in it: the predictions and the labels of
        every other one of them, encoded with the placeholder time."""
        ticks = int(step.seconds / TICK_S) + 1
        per_tick = step.rate * TICK_S / len(VERSIONS)
        n_per_version = int(per_tick * ticks) + 1000
        pools = {v: self._pool(v, n_per_version) for v in VERSIONS}
        used = dict.fromkeys(VERSIONS, 0)
        plan: Plan = []
        owed = 0.0
        for _ in range(ticks):
            owed += per_tick
            k = int(owed)
            owed -= k
            sends: list[tuple[Stamped, Stamped | None]] = []
            for v in VERSIONS if k else ():
                rows = np.arange(used[v], min(used[v] + k, n_per_version))
                used[v] += len(rows)
                cols = pools[v].take(rows)
                cols.event_time_ms = np.full(len(rows), PLACEHOLDER_MS, dtype=np.int64)
                predictions = Stamped.encode(
                    self.codec.encode("PredictionBatch", cols.to_columnar_record()),
                    cols.key,
                    len(rows),
                    PLACEHOLDER_MS,
                )
                half = rows[::2]
                labels = _labels(pools[v], half, PLACEHOLDER_MS)  # label time: + 1 s
                sends.append(
                    (
                        predictions,
                        Stamped.encode(
                            self.codec.encode("LabelBatch", labels.to_columnar_record()),
                            labels.key or "",
                            len(half),
                            PLACEHOLDER_MS + 1000,
                        )
                        if len(half)
                        else None,
                    )
                )
            plan.append(sends)
        return plan

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.01)

    def _send(self, topic: str, key: str, name: str, record: dict[str, Any]) -> None:
        self._produce(topic, key.encode(), self.codec.encode(name, record))


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

PROBE_WINDOW = "1h"
"""Long enough that no probe of the run leaves it before the run ends."""


class Probes:
    """Labeled probe predictions of their own model version, one at a time: each is sent,
    then ``/api/calibration`` is polled until it counts it; event time → counted, ms."""

    def __init__(self, settings: Settings, topics: Topics, client: GatewayClient, mid: int):
        self.load = Load(settings, topics, seed=991)
        self.client, self.mid = client, mid
        spec = ModelSpec(name=MODEL, version="probe", tenant=TENANT)
        self.pool = generate(spec, 5000, 4242, 0).predictions
        self.sent = 0
        self.last_event_ms = 0

    def one(self) -> float | None:
        """Send the next probe; its freshness in ms, or None when not counted in 30 s."""
        i = self.sent
        self.sent += 1
        now_ms = int(time.time() * 1000)
        self.last_event_ms = now_ms
        cols = self.pool.take([i])
        cols.event_time_ms = np.array([now_ms], dtype=np.int64)
        load = self.load
        load._send(
            load.topics.inference_raw, cols.key, "PredictionBatch", cols.to_columnar_record()
        )
        labels = _labels(self.pool, np.array([i]), now_ms)
        labels.label_time_ms = np.array([now_ms], dtype=np.int64)
        load._send(load.topics.labels_raw, cols.key, "LabelBatch", labels.to_columnar_record())
        load.producer.flush(5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.client.calibration(self.mid, PROBE_WINDOW)["n_labeled"] >= self.sent:
                return time.time() * 1000 - now_ms
            time.sleep(0.005)
        return None


class Freshness(threading.Thread):
    """A probe every ``every`` seconds until told to stop."""

    def __init__(self, probes: Probes, every: float) -> None:
        super().__init__(daemon=True)
        self.probes, self.every = probes, every
        self.stop_event = threading.Event()
        self.samples_ms: list[float] = []

    def run(self) -> None:
        while not self.stop_event.is_set() and self.probes.sent < len(self.probes.pool):
            sample = self.probes.one()
            if sample is not None:
                self.samples_ms.append(sample)
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


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _drain(lags: LagProbe, limit: float, verbose: bool = False) -> tuple[float, dict[str, int]]:
    started = time.monotonic()
    peak: dict[str, int] = {}
    while True:
        try:
            lag = lags.lag()
        except KafkaException:  # a group coordinator moving (a new cluster, a rebalance)
            if time.monotonic() - started > limit:
                return float("inf"), peak
            time.sleep(0.5)
            continue
        for w, v in lag.items():
            peak[w] = max(peak.get(w, 0), v)
        if all(v == 0 for v in lag.values()):
            return time.monotonic() - started, peak
        if verbose:
            print(f"  lag {lag}", flush=True)
        if time.monotonic() - started > limit:
            return float("inf"), peak
        time.sleep(0.2)


DEFAULT_RATES = "500,1000,2000,5000,10000,15000,20000,25000,30000,40000,50000"


@app.command()
def main(
    rates: str = typer.Option(DEFAULT_RATES, help="events/s steps, lowest first"),
    step_seconds: float = typer.Option(20.0, min=5),
    max_drain_seconds: float = typer.Option(2.0, min=0.1),
    latency_rates: str = typer.Option(
        "500,10000", help="events/s of the latency phases (capped at the highest sustained)"
    ),
    latency_seconds: float = typer.Option(30.0, min=5),
    idle_seconds: float = typer.Option(60.0, min=1, help="length of the idle measurement"),
    out: Path = typer.Option(Path("reports"), help="folder of pipeline.md and pipeline.json"),
    verbose: bool = typer.Option(False, help="print every worker's lag while a step drains"),
    replicas: int = typer.Option(1, min=1, max=8, help="processes of every worker"),
    cluster: bool = typer.Option(
        False, help="on the cluster profile's 3-broker Kafka (started when not running)"
    ),
    cluster_redis: bool = typer.Option(
        True,
        "--cluster-redis/--single-redis",
        help="with --cluster: the 3-master Redis Cluster, or the single stack's Redis",
    ),
) -> None:
    """Rate steps up to the first not sustained; latency and freshness at a low and a high
    rate; then CPU at rest and the first event after the quiet period."""
    speed = machine_seconds()
    print(f"machine: {speed:.2f} s for 20 M additions; load average {_loadavg()}", flush=True)
    base = _cluster_base(cluster_redis) if cluster else Settings()
    stack = _stack_line(base, replicas)
    print(f"stack: {stack}", flush=True)
    with scratch_database(bench_settings(base), prefix="caliber_bench") as settings:
        run = Run(settings, step_seconds, max_drain_seconds, verbose, replicas)
        report = run.execute(
            [int(r) for r in rates.split(",")],
            [int(r) for r in latency_rates.split(",")],
            latency_seconds,
            idle_seconds,
        )
    report["stack"] = stack
    report["machine"] = {
        "cores": mp.cpu_count(),
        "seconds_for_20M_additions": round(speed, 3),
        "load_average_before": run.load_before,
        "load_average_after": _loadavg(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(report, indent=2, default=float))
    md = _markdown(report)
    (out / "pipeline.md").write_text(md)
    print(md)
    print(f"written: {out / 'pipeline.md'}, {out / 'pipeline.json'}")


def _cluster_base(cluster_redis: bool) -> Settings:
    """Settings of the cluster profile, its servers started when they do not run (and then
    stopped when the benchmark ends). PostgreSQL is the single stack's server and database
    (the benchmark works in a scratch database of it)."""
    single = Settings()
    base = single.model_copy(
        update={
            "stack_profile": "cluster",
            "postgres_dsn": SecretStr(single.postgres_url),
            "redis_url": None if cluster_redis else single.redis_dsn,
        }
    )
    # Stopped at exit, after the benchmark's namespace is removed from them (atexit runs
    # the last registered first, and the namespace registers later).
    kafka = KafkaCluster(base)
    if kafka.start() == "started":
        atexit.register(kafka.stop)
    if cluster_redis:
        redis_cluster = RedisCluster(base)
        if redis_cluster.start() == "started":
            atexit.register(redis_cluster.stop)
    return base


def _stack_line(settings: Settings, replicas: int) -> str:
    cluster = settings.stack_profile == "cluster"
    kafka = "3-broker Kafka cluster (RF 3, min ISR 2)" if cluster else "one Kafka broker"
    redis = "3-master Redis Cluster" if cluster and settings.redis_url is None else "one Redis"
    return f"{replicas} replica(s) of every worker; {kafka}; {redis}; one PostgreSQL"


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class Run:
    """The services, the benchmark's clients and the meters of one run."""

    def __init__(
        self, settings: Settings, step_s: float, max_drain: float, verbose: bool, replicas: int
    ):
        self.settings = settings
        self.replicas = replicas
        self.topics = Topics.for_namespace(settings.topic_namespace)
        self.step_s, self.max_drain, self.verbose = step_s, max_drain, verbose
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.revived: list[str] = []
        self.logs = settings.logs_dir / f"bench-{settings.topic_namespace}"
        self.load_before = _loadavg()

    def execute(
        self, rates: list[int], latency_rates: list[int], latency_s: float, idle_s: float
    ) -> dict[str, Any]:
        with ExitStack() as cleanup:
            self._start(cleanup)
            self.load.run(Step(rate=1000, seconds=10))  # start-up and group joins behind us
            _drain(self.lags, 60, self.verbose)
            self.revived = self._revive()
            steps, best = self._steps(rates)
            top = best.rate if best else rates[0]
            lows = sorted({min(r, top) for r in latency_rates})
            phases = [self._latency(r, latency_s) for r in lows]
            idle = self._idle(idle_s)
            self.parent.send("stop")
            if not self.parent.poll(60):
                raise RuntimeError("the decision reader sent nothing back")
            event_ms, decided_ms, seen_ms = self.parent.recv()
            self.live.stop_event.set()
            self.live.join(5)
            memory = {w: peak_rss_mb(p.pid) for w, p in self.procs.items()}
            exited = {w: p.returncode for w, p in self.procs.items() if p.poll() is not None}
        for phase in phases:
            _phase_latency(phase, event_ms, decided_ms, seen_ms)
        after = event_ms >= idle.pop("probe_event_ms")
        idle["first_event_decision_ms"] = (
            float((seen_ms - event_ms)[after].min()) if after.any() else None
        )
        # At the highest sustained rate; when none was, at the lowest step (still a figure
        # to compare runs by, though backlog left at the step's end is not in it).
        at = best or (steps[0] if steps else None)
        cpu_per_k = (
            {w: round(1000 * c / at.events, 3) for w, c in at.cpu_seconds.items()} if at else {}
        )
        return {
            "highest_sustained_rate": best.rate if best else None,
            "steps": [asdict(s) for s in steps],
            "verdict": _verdict(steps, self.step_s),
            "latency": phases,
            "idle": idle,
            "cpu_seconds_per_1000_events": cpu_per_k,
            "cpu_rate": at.rate if at else None,
            "peak_rss_mb": {w: round(v, 1) for w, v in memory.items()},
            "decisions_read": int(event_ms.size),
            "exited": exited,
            "started_again_after_warm_up": self.revived,
            "live_feed": {"decisions_for_v1": self.live.decisions, "closed": self.live.closed},
        }

    def _start(self, cleanup: ExitStack) -> None:
        settings = self.settings
        logs = settings.logs_dir / f"bench-{settings.topic_namespace}"
        key = asyncio.run(_admin_key(settings))
        port = _free_port()
        cleanup.callback(_stop, self.procs)
        self.procs["gateway"] = start_service(
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
        self.logs = logs
        for w in WORKERS:
            for i in range(self.replicas):
                self._start_worker(w, i)
        self.live = LiveClient(
            f"ws://127.0.0.1:{port}/ws/live?api_key={key}&model_version_id={ids['v1']}"
        )
        self.live.start()
        cleanup.callback(self.live.stop_event.set)
        self.lags = LagProbe(settings, self.topics)
        cleanup.callback(self.lags.close)
        ctx = mp.get_context("spawn")
        self.parent, child = ctx.Pipe()
        reader = ctx.Process(
            target=_read_decisions,
            args=(settings.kafka_servers, self.topics.decisions, settings.topic_partitions, child),
            daemon=True,
        )
        reader.start()
        cleanup.callback(reader.kill)
        if not self.parent.poll(60) or self.parent.recv() != "ready":
            raise RuntimeError("the decision reader did not start")
        self.load = Load(settings, self.topics, seed=1)
        self.probes = Probes(settings, self.topics, client, ids["probe"])
        pids = {w: p.pid for w, p in self.procs.items()}
        pids.update({"load generator": os.getpid(), "decision reader": int(reader.pid or 0)})
        self.meter = Meter(pids, stack_pids(settings))

    def _start_worker(self, worker: str, instance: int) -> None:
        name = worker if self.replicas == 1 else f"{worker}-{instance}"
        self.procs[name] = start_service(
            worker,
            self.settings,
            self.logs / f"{name}.log",
            CALIBER_METRICS_PORT="0",
            CALIBER_POLICY_CATCH_UP_SECONDS="3",
            CALIBER_INSTANCE_ID=str(instance),
        )

    def _revive(self) -> list[str]:
        """Start again, as a supervisor would, every worker that exited during start-up and
        the warm-up (a replica may crash while its group rebalances); returns their names."""
        exited = [w for w, p in self.procs.items() if w != "gateway" and p.poll() is not None]
        for name in exited:
            worker, _, instance = name.partition("-")
            self._start_worker(worker, int(instance or 0))
            self.meter.pids[name] = self.procs[name].pid
        if exited:
            print(f"started again after the warm-up: {', '.join(exited)}", flush=True)
            self.load.run(Step(rate=1000, seconds=10))
            _drain(self.lags, 60, self.verbose)
        return exited

    def _steps(self, rates: list[int]) -> tuple[list[Step], Step | None]:
        steps: list[Step] = []
        best: Step | None = None
        for rate in rates:
            step = Step(rate=rate, seconds=self.step_s)
            self.meter.start()
            self.load.run(step)
            step.drain_seconds, step.peak_lag = _drain(
                self.lags, max(30.0, self.step_s), self.verbose
            )
            step.cpu_seconds, _, step.machine_busy = self.meter.stop()
            step.sustained = step.drain_seconds <= self.max_drain
            step.load_average = _loadavg()
            steps.append(step)
            verdict = "sustained" if step.sustained else "NOT sustained"
            print(
                f"rate {rate:>6}/s: sent {step.events} events, {step.labels} labels; "
                f"drained in {step.drain_seconds:.1f} s -> {verdict} "
                f"(machine {step.machine_busy:.0%} busy, load average {step.load_average})",
                flush=True,
            )
            if not step.sustained:
                _drain(self.lags, 300, self.verbose)
                break
            best = step
        return steps, best

    def _latency(self, rate: int, seconds: float) -> dict[str, Any]:
        step = Step(rate=rate, seconds=seconds)
        plan = self.load.plan(step)  # before the probes: they measure the load only
        fresh = Freshness(self.probes, 1.0)
        fresh.start()
        self.load.run(step, plan)
        fresh.stop_event.set()
        fresh.join(35)
        _drain(self.lags, 60, self.verbose)
        print(f"latency phase at {rate}/s done (load average {_loadavg()})", flush=True)
        return {
            "rate": rate,
            "started_ms": step.started_ms,
            "ended_ms": step.ended_ms,
            "freshness_ms": _summary(np.asarray(fresh.samples_ms), "probes"),
            "load_average": _loadavg(),
        }

    def _idle(self, seconds: float) -> dict[str, Any]:
        """Nothing produced for ``seconds``: each process's share of a core; then the
        freshness and decision latency of the first event after the quiet period."""
        _drain(self.lags, 60, self.verbose)
        self.meter.start()
        time.sleep(seconds)
        cpu, wall, busy = self.meter.stop()
        freshness = self.probes.one()
        print(f"idle {seconds:.0f} s done (load average {_loadavg()})", flush=True)
        return {
            "seconds": round(wall, 1),
            "cores": {w: round(c / wall, 4) for w, c in cpu.items()},
            "machine_busy": busy,
            "load_average": _loadavg(),
            "first_event_freshness_ms": freshness,
            "probe_event_ms": self.probes.last_event_ms,
        }


SERVICES = ("gateway", *WORKERS)
SERVERS = ("Kafka", "Redis", "PostgreSQL")


def _verdict(steps: list[Step], step_s: float) -> str:
    """The process that bounds the rate, from the last step run (the first not sustained,
    or the highest if all were)."""
    if not steps:
        return "no step was run"
    last = steps[-1]
    wall = step_s + (last.drain_seconds if last.drain_seconds != float("inf") else 30.0)
    cores = {w: c / wall for w, c in last.cpu_seconds.items() if _is_pipeline(w)}
    name, used = max(cores.items(), key=lambda kv: kv[1])
    cpu = mp.cpu_count()
    if used >= 0.9:
        return (
            f"bound by {name}: {used:.2f} of a core at {last.rate}/s, its one busy thread "
            f"is full (machine {last.machine_busy:.0%} busy)"
        )
    return (
        f"bound by the machine's {cpu} cores ({last.machine_busy:.0%} busy at {last.rate}/s); "
        f"the largest share is {name}'s, {used:.2f} of a core"
    )


def _is_pipeline(name: str) -> bool:
    """A service (or one of its replicas, ``ingest-1``) or a server (``Kafka 2``)."""
    return name.rsplit("-", 1)[0] in SERVICES or name.split(" ")[0] in SERVERS


def _phase_latency(
    phase: dict[str, Any], event_ms: np.ndarray, decided_ms: np.ndarray, seen_ms: np.ndarray
) -> None:
    """The decision latency of the events of ``phase`` (event time within its start and end,
    both taken out of it), whole and split where the policy decides."""
    window = (event_ms >= phase.pop("started_ms")) & (event_ms <= phase.pop("ended_ms"))
    phase["decision_latency_ms"] = _summary((seen_ms - event_ms)[window], "events")
    phase["decided_ms"] = _summary((decided_ms - event_ms)[window], "events")
    phase["readable_after_decided_ms"] = _summary((seen_ms - decided_ms)[window], "events")


def _latency_parts(phase: dict[str, Any]) -> list[str]:
    """The decision latency split where the policy decides (absent from older reports)."""
    dec, rd = phase.get("decided_ms"), phase.get("readable_after_decided_ms")
    if dec is None or rd is None:
        return []
    return [
        f"  - produce → decided by the policy (ingest, the policy): p50 {dec['p50']:.0f} ms, "
        f"p99 {dec['p99']:.0f} ms; decided → readable (the policy's commit, the read): "
        f"p50 {rd['p50']:.0f} ms, p99 {rd['p99']:.0f} ms"
    ]


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
    m = r["machine"]
    lines = [
        "# Caliber pipeline under load",
        "",
        f"Machine: {m['cores']} cores, {m['seconds_for_20M_additions']:.2f} s for 20 M "
        f"additions in CPython; load average {m['load_average_before']} before, "
        f"{m['load_average_after']} after. Workers: ingest, policy, aggregator, drift, "
        f"recorder, gateway (one /ws/live client). Stack: {r.get('stack', '')}.",
        "",
        f"**Highest sustained rate: {r['highest_sustained_rate']} events/s** "
        "(PredictionBatch producers, half the events labeled).",
        "",
        f"Verdict: {r['verdict']}.",
        "",
        "| rate (events/s) | events | labels | drain after step (s) | machine CPU "
        "| load average | sustained |",
        "|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for s in r["steps"]:
        lines.append(
            f"| {s['rate']} | {s['events']} | {s['labels']} | {s['drain_seconds']:.1f} | "
            f"{s['machine_busy']:.0%} | {s['load_average']} | "
            f"{'yes' if s['sustained'] else 'no'} |"
        )
    lines.append("")
    for phase in r["latency"]:
        lat, fr = phase["decision_latency_ms"], phase["freshness_ms"]
        lines += [
            f"At {phase['rate']} events/s (load average {phase['load_average']}):",
            "",
            f"- produce → decision latency: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
            f"max {lat['max']:.0f} ms ({lat['events']} events)",
            *_latency_parts(phase),
            f"- metric freshness (event time → counted by /api/calibration): "
            f"p50 {fr['p50']:.0f} ms, p99 {fr['p99']:.0f} ms, max {fr['max']:.0f} ms "
            f"({fr['probes']} probes)",
            "",
        ]
    lines += _cpu_table(r)
    if r.get("started_again_after_warm_up"):
        again = ", ".join(r["started_again_after_warm_up"])
        lines += ["", f"Exited during start-up or the warm-up and started again: {again}."]
    if r.get("exited"):
        gone = ", ".join(f"{w} (exit {code})" for w, code in r["exited"].items())
        lines += ["", f"Exited during the run (not restarted): {gone}."]
    idle = r["idle"]
    first_d, first_f = idle["first_event_decision_ms"], idle["first_event_freshness_ms"]
    lines += [
        "",
        f"Idle: nothing produced for {idle['seconds']:.0f} s (load average "
        f"{idle['load_average']}, machine {idle['machine_busy']:.0%} busy), share of a core:",
        "",
        "| process | cores |",
        "|---|---:|",
        *(f"| {w} | {c:.3f} |" for w, c in idle["cores"].items()),
        "",
        "First event after the quiet period: decision "
        + ("not read" if first_d is None else f"{first_d:.0f} ms")
        + ", counted by /api/calibration "
        + ("not within 30 s" if first_f is None else f"{first_f:.0f} ms")
        + ".",
    ]
    lf = r["live_feed"]
    lines += [
        "",
        f"Live feed: {lf['decisions_for_v1']} decisions of v1 pushed to the client"
        + (f"; closed: {lf['closed']}" if lf["closed"] else ""),
        "",
    ]
    return "\n".join(lines)


def _cpu_table(r: dict[str, Any]) -> list[str]:
    lines = [
        f"| process | CPU s per 1,000 events at {r['cpu_rate']} events/s | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for w, cpu in r["cpu_seconds_per_1000_events"].items():
        mb = r["peak_rss_mb"].get(w)
        lines.append(f"| {w} | {cpu:.3f} | {'' if mb is None else f'{mb:.0f}'} |")
    return lines


if __name__ == "__main__":
    app()
