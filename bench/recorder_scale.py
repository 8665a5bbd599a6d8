"""The recorder against a large store: cost per event as PostgreSQL grows.

``python -m bench.recorder_scale`` fills a scratch database with 10,000,000 predictions
and 1,000,000 labels waiting for their predictions (:func:`preload`, server-side), starts
the recorder service on a fresh topic namespace and produces, round after round, the four
shapes of traffic it meets, to its real input topics:

- *before*: decisions whose labels already wait in ``pending_labels``;
- *with*: decisions of new events and, right behind them, their labels;
- *long after*: labels of predictions stored long ago (the loaded, unlabelled half);
- *parked*: labels of events whose decisions have not come (they wait).

It prints the load time, rows/s, each statement kind's latency (p50/p99/max, from the
recorder's ``caliber_recorder_statement_seconds``), the CPU of the database's backends and
of the recorder per 1,000 events, the recorder's peak RSS, the database size and the load
average. ``--predictions 200000 --pending 20000`` is a quick run; ``--database NAME
--keep`` loads once and measures again on the same store.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import psycopg
import typer
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from pydantic import SecretStr

from bench.scale_data import (
    MODEL,
    START_MS,
    TENANT,
    VERSION,
    pending_id,
    prediction_id,
    preload,
)
from services.policy.processing import decide
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.db import migrate
from shared.recalibration.maps import IDENTITY
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from tooling.benchmarking import (
    bench_settings,
    cpu_seconds,
    histogram_quantile,
    join_identity,
    peak_rss_mb,
    scrape,
    start_service,
    with_database,
)

__all__ = ["preload"]

app = typer.Typer(add_completion=False)
STATEMENTS = ("insert_decisions", "write_labels")
KINDS = ("before", "with", "long after", "parked")


@contextmanager
def _database(settings: Settings, name: str, keep: bool) -> Iterator[tuple[Settings, bool]]:
    """``settings`` on database ``name`` (created and migrated when it does not exist;
    dropped on exit unless ``keep``), and whether it was created."""
    admin = settings.postgres_url
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    scratch = settings.model_copy(update={"postgres_dsn": SecretStr(with_database(admin, name))})
    try:
        migrate(scratch.postgres_url)
        join_identity(scratch, into=("postgres",))
        yield scratch, found is None
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def _decision(ids: list[str], t: int) -> PredictionColumns:
    n = len(ids)
    rng = np.random.default_rng(len(ids) + t)
    conf = rng.uniform(0.55, 1.0, n)
    return PredictionColumns(
        tenant=TENANT,
        model_name=MODEL,
        model_version=VERSION,
        event_ids=ids,
        event_time_ms=np.arange(n, dtype=np.int64) + t,
        predicted_labels=["cat"] * n,
        confidences=conf,
        class_labels=["cat", "dog"],
        probabilities=np.stack([conf, 1 - conf], axis=1),
        numeric_features={"f0": rng.normal(size=n), "f1": rng.normal(size=n)},
        categorical_features={"color": ["red"] * n},
    )


def _labels(ids: list[str], t: int) -> LabelColumns:
    n = len(ids)
    return LabelColumns(
        tenant=TENANT,
        model_name=MODEL,
        model_version=VERSION,
        event_ids=ids,
        ground_truths=["dog"] * n,
        sources=["feed"] * n,
        label_time_ms=np.full(n, t, dtype=np.int64),
    )


class Traffic:
    """The four shapes of traffic, ``batch`` events per message, drawn from the loaded ids
    so a re-run on a kept store still finds predictions and labels of each shape."""

    def __init__(
        self, settings: Settings, predictions: int, pending: int, batch: int, rounds: int
    ) -> None:
        self.topics = Topics.for_namespace(settings.topic_namespace)
        self.codec = AvroCodec()
        self.producer = make_producer(settings)
        self.batch = batch
        rng = random.Random()
        wanted = (rounds + 1) * batch
        # Each waiting label and each old prediction is drawn once in a run.
        self.waiting = iter(rng.sample(range(1, pending + 1), min(wanted, pending)))
        old = range(predictions // 2 + 1, predictions + 1)
        self.old = iter(rng.sample(old, min(wanted, len(old))))
        self.events = {kind: 0 for kind in KINDS}

    def _decisions(self, ids: list[str], t: int) -> None:
        cols = _decision(ids, t)
        d = decide(cols, 0.7, IDENTITY, "registry", t + 1_000)
        self.producer.produce(
            self.topics.decisions,
            self.codec.encode("DecisionBatch", d.to_record()),
            cols.key.encode(),
        )

    def _label(self, ids: list[str], t: int) -> None:
        lbl = _labels(ids, t)
        self.producer.produce(
            self.topics.labels, self.codec.encode("LabelBatch", lbl.to_record()), None
        )

    def round(self, t: int) -> None:
        b = self.batch
        waiting = [pending_id(j) for j in itertools.islice(self.waiting, b)]
        if waiting:
            self._decisions(waiting, t)
        new = [str(uuid.uuid4()) for _ in range(b)]
        self._decisions(new, t)
        self._label(new, t + 500)
        old = [prediction_id(i) for i in itertools.islice(self.old, b)]
        if old:
            self._label(old, t + 86_400_000)
        self._label([str(uuid.uuid4()) for _ in range(b)], t)
        for kind, count in zip(KINDS, (len(waiting), b, len(old), b), strict=True):
            self.events[kind] += count
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_committed(
    settings: Settings, topics: list[str], worker: subprocess.Popen[bytes], timeout: float
) -> None:
    """Until the recorder's group has committed up to the end of every input partition."""
    probe = Consumer(consumer_config(settings, f"{settings.topic_namespace}-recorder"))
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in probe.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the recorder exited with {worker.returncode}")
            for tp in probe.committed([TopicPartition(t, p) for t, p in ends], timeout=10):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    del ends[(tp.topic, tp.partition)]
            time.sleep(0.05)
        if ends:
            raise RuntimeError(f"the recorder did not commit up to {ends} in {timeout} s")
    finally:
        probe.close()


def _backends_cpu(conn: psycopg.Connection) -> float:
    """CPU seconds of this database's other backends (the recorder's connections)."""
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    total = 0.0
    for (pid,) in pids:
        with suppress(OSError):
            total += cpu_seconds(int(pid))
    return total


def _statement_line(text: str, kind: str) -> str:
    name = "caliber_recorder_statement_seconds"
    sel = f'statement="{kind}"'
    lines = [ln for ln in text.splitlines() if ln.startswith(f"{name}_bucket{{") and sel in ln]
    cumulative = sorted(
        (float(le.group(1)), float(ln.rsplit(" ", 1)[1]))
        for ln in lines
        if (le := re.search(r'le="([^"]+)"', ln))
    )
    n = cumulative[-1][1] if cumulative else 0
    if not n:
        return f"  {kind:<19} no statements"
    top = min(le for le, count in cumulative if count >= n)
    sub = "\n".join(lines)
    p50 = histogram_quantile(sub, name, 0.5) * 1000
    p99 = histogram_quantile(sub, name, 0.99) * 1000
    return (
        f"  {kind:<19} {n:>6.0f} statements  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
        f"max <= {top * 1000:.0f} ms"
    )


def _rows(text: str) -> dict[str, float]:
    found = re.finditer(
        r'^caliber_recorder_rows_total\{operation="([^"]+)",table="([^"]+)"\} ([0-9.e+]+)$',
        text,
        re.M,
    )
    return {f"{m.group(2)} {m.group(1)}": float(m.group(3)) for m in found}


@app.command()
def main(
    predictions: int = 10_000_000,
    pending: int = 1_000_000,
    rounds: int = 50,
    batch: int = 500,
    database: str = "",
    keep: bool = False,
    profile: str = "",
) -> None:
    """Load (unless ``--database`` names a store loaded before), then drive the recorder
    with ``rounds`` rounds of the four traffic shapes, ``batch`` events per message;
    ``--profile PATH`` samples the recorder with py-spy while it writes (collapsed stacks
    in PATH, the functions most seen printed)."""
    settings = bench_settings()
    name = database or f"caliber_bench_scale_{uuid.uuid4().hex[:8]}"
    with _database(settings, name, keep) as (scratch, created):
        if created:
            loaded = preload(scratch.postgres_url, predictions, pending)
            print(
                f"loaded {loaded.predictions:,} predictions and {loaded.pending:,} pending "
                f"labels in {loaded.seconds:.1f} s ({loaded.database_bytes / 2**30:.2f} GiB)"
            )
        else:
            print(f"reusing database {name} (loaded before)")
        _drive(scratch, predictions, pending, rounds, batch, profile)
        if keep:
            print(f"kept database {name}")


def _start_profile(pid: int, path: str) -> subprocess.Popen[bytes] | None:
    if not path:
        return None
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_profile(spy: subprocess.Popen[bytes] | None, path: str) -> None:
    """Stop py-spy (it writes on SIGINT) and print the frames most often on the CPU."""
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    spy.wait(60)
    own: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        own[stack.rsplit(";", 1)[-1]] += int(count)
    print(f"profile of the recorder ({total} samples, {path}), the frames most on the CPU:")
    for frame, n in own.most_common(12):
        print(f"  {100 * n / max(total, 1):5.1f} %  {frame}")


def _drive(
    settings: Settings, predictions: int, pending: int, rounds: int, batch: int, profile: str
) -> None:
    port = _free_port()
    proc = start_service(
        "recorder",
        settings,
        Settings().logs_dir / "recorder-scale-bench.log",
        CALIBER_METRICS_PORT=str(port),
    )
    traffic = Traffic(settings, predictions, pending, batch, rounds)
    topics = [traffic.topics.decisions, traffic.topics.labels]
    try:
        traffic.round(START_MS)  # warm-up: start-up and the group join behind us
        traffic.flush()
        _wait_committed(settings, topics, proc, 120)
        warm = _rows(scrape(port))
        with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
            pg0, rec0, load0 = _backends_cpu(conn), cpu_seconds(proc.pid), os.getloadavg()
            traffic.events = {kind: 0 for kind in KINDS}
            spy = _start_profile(proc.pid, profile)
            started = time.monotonic()
            for r in range(rounds):
                traffic.round(START_MS + (r + 1) * 60_000)
            traffic.flush()
            produced = time.monotonic() - started
            _wait_committed(settings, topics, proc, 3_600)
            took = time.monotonic() - started
            _stop_profile(spy, profile)
            pg = _backends_cpu(conn) - pg0
            rec = cpu_seconds(proc.pid) - rec0
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        text = scrape(port)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    rows = _rows(text)
    changed = sum(rows.values()) - sum(warm.values())
    events = sum(traffic.events.values())
    print(
        f"recorder: {events:,} events in {rounds} rounds ("
        + ", ".join(f"{k} {v:,}" for k, v in traffic.events.items())
        + f"), produced in {produced:.1f} s, stored in {took:.1f} s: "
        f"{events / took:,.0f} events/s, {changed / took:,.0f} rows/s"
    )
    print("  rows: " + ", ".join(f"{k} {v - warm.get(k, 0):,.0f}" for k, v in rows.items()))
    print("statements (the recorder's caliber_recorder_statement_seconds, warm-up included):")
    kinds = sorted(
        set(re.findall(r'caliber_recorder_statement_seconds_count\{statement="([^"]+)"', text))
    )
    for kind in kinds or STATEMENTS:
        print(_statement_line(text, kind))
    print(
        f"CPU per 1,000 events: PostgreSQL backends {pg / events * 1000:.3f} s, "
        f"recorder {rec / events * 1000:.3f} s; recorder peak RSS {rss:.0f} MiB; "
        f"database {int(size[0]) / 2**30 if size else 0:.2f} GiB; "
        f"load average {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    app()
