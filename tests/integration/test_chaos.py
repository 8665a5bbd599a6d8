"""The crash campaign: traffic with labels, duplicates and bad messages while every service
is SIGKILLed at random and Kafka, Redis and PostgreSQL are each killed and restarted once;
at the end every count is exact.

On a private stack (its own ports and stack home, like the rebuild test's), so killing a
server never touches the stack other tests share. The size is read from the environment:
``CALIBER_CHAOS_EVENTS`` (5,000 in the normal suite, 100,000 under ``make chaos``),
``CALIBER_CHAOS_KILLS`` (service kills: 8, resp. 20) and ``CALIBER_CHAOS_SEED`` (the seed of
the workload and of the fault schedule, so a run can be replayed; ``CALIBER_CHAOS_TIMEOUT``
bounds the test, 1,800 s). The test prints the fault log and an expected-versus-measured
table.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from simulator.faults import FAULTS
from simulator.generator import Generated, ModelSpec, generate
from simulator.producer import event_records, label_columns
from tests.integration.conftest import start_service
from tests.integration.edge_io import event_ids_on
from tests.integration.gateway_client import make_keys, wait_http
from tests.integration.kafka_io import TopicReader
from tests.integration.test_rebuild import WORKER_ENV, WORKERS, Stack
from tests.integration.test_rebuild import stack as private_stack
from tests.ports import free_port
from tooling.stack.kafka import Kafka
from tooling.stack.postgres import Postgres
from tooling.stack.redis import Redis

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EVENTS = int(os.environ.get("CALIBER_CHAOS_EVENTS", "5000"))
KILLS = int(os.environ.get("CALIBER_CHAOS_KILLS", "8"))
SEED = int(os.environ.get("CALIBER_CHAOS_SEED", "1313"))
SERVICES = (*WORKERS, "gateway")
SERVERS = ("kafka", "redis", "postgres")
CODEC = AvroCodec()
STEPS = KILLS + len(SERVERS) + 2  # traffic is sent in this many slices, a fault after each
DUPLICATE_SHARE = 0.03
BAD_SHARE = 0.02
REST_SHARE = 0.1

stack = private_stack  # the module-scoped private stack fixture, under its usual name


# --- the workload -------------------------------------------------------------------------


@dataclass
class Slice:
    """What one step sends: Kafka messages (topic, key, value) and REST batches."""

    kafka: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    rest: list[list[dict[str, Any]]] = field(default_factory=list)
    bad_rest: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass
class Workload:
    slices: list[Slice]
    events: dict[str, int]  # version → distinct accepted events
    labeled: dict[str, int]  # version → of them, labeled
    dead_letters: Counter[str]
    messages: int = 0


SPECS = (
    ModelSpec(name="chaos", version="v1", numeric_features=2, categorical_features=1),
    ModelSpec(name="chaos", version="v2", overconfidence=0.1, numeric_features=2),
    ModelSpec(name="chaos", version="rest", numeric_features=1),
)


def _gen(spec: ModelSpec, n: int, seed: int, label_share: float = 0.7) -> Generated:
    spec = replace(spec, label_share=label_share)
    start = int(time.time() * 1000) - 3_600_000
    return generate(spec, n, seed, start, rate_per_s=100.0)


def _rest_event(rec: dict[str, Any], truth: str | None) -> dict[str, Any]:
    return {
        "event_id": rec["event_id"],
        "model_name": rec["model_name"],
        "model_version": rec["model_version"],
        "predicted_label": rec["predicted_label"],
        "confidence": rec["confidence"],
        "probabilities": rec["probabilities"],
        "features": rec["features"],
        "ground_truth": truth,
    }


def workload(
    topics: Topics,
    n: int,
    seed: int,
    steps: int = STEPS,
    label_share: float = 0.7,
    specs: tuple[ModelSpec, ...] = SPECS,
) -> Workload:
    """``n`` events in ``steps`` slices: two Kafka-fed model versions and a REST-fed one
    (``specs``), ``label_share`` of each labeled, with duplicates and bad messages."""
    rng = random.Random(seed)
    n_rest = int(n * REST_SHARE)
    n_kafka = n - n_rest
    n_bad = max(len(FAULTS), int(n * BAD_SHARE))
    gens = [_gen(s, n_kafka // 2, seed + i, label_share) for i, s in enumerate(specs[:2])]
    rest_gen = _gen(specs[2], n_rest, seed + 2, label_share)
    bad_gen = _gen(specs[0], n_bad, seed + 3)
    slices = [Slice() for _ in range(steps)]
    events: dict[str, int] = {}
    labeled: dict[str, int] = {}
    for gen in gens:
        cols = gen.predictions
        events[cols.model_version] = len(cols)
        labeled[cols.model_version] = int(gen.labeled.sum())
        key = cols.key.encode()
        bounds = np.linspace(0, len(cols), steps + 1).astype(int)
        for step, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            rows = np.arange(lo, hi)
            part = cols.take(rows)
            out = slices[step].kafka
            if step % 2:  # columnar batches of 100 in odd steps, single events otherwise
                for b in range(0, len(rows), 100):
                    batch = part.take(np.arange(b, min(b + 100, len(rows))))
                    value = CODEC.encode("PredictionBatch", batch.to_record())
                    out.append((topics.inference_raw, key, value))
            else:
                for rec in event_records(part):
                    out.append((topics.inference_raw, key, CODEC.encode("InferenceEvent", rec)))
            lab = label_columns(gen, rows[gen.labeled[rows]])
            for i, eid in enumerate(lab.event_ids):
                label = {
                    "event_id": eid,
                    "tenant": lab.tenant,
                    "model_name": lab.model_name,
                    "model_version": lab.model_version,
                    "ground_truth": lab.ground_truths[i],
                    "source": "feed",
                    "label_time_ms": int(lab.label_time_ms[i]),
                }
                out.append((topics.labels_raw, key, CODEC.encode("Label", label)))
    # Exact duplicates of prediction messages already sent, re-sent in a later step.
    for step in range(1, steps):
        before = [m for s in slices[:step] for m in s.kafka if m[0] == topics.inference_raw]
        k = int(len(before) * DUPLICATE_SHARE / (steps - 1)) + 1
        slices[step].kafka.extend(rng.sample(before, min(k, len(before))))
    # Bad messages, one code after the other, spread over the steps.
    codes: Counter[str] = Counter()
    kinds = list(FAULTS)
    for j, rec in enumerate(event_records(bad_gen.predictions)):
        code = kinds[j % len(kinds)]
        slices[j % steps].kafka.append((topics.inference_raw, b"broken", FAULTS[code](CODEC, rec)))
        codes[str(code)] += 1
    for s in slices:
        rng.shuffle(s.kafka)
    # REST: batches of 50 (some labeled inline), each sent twice; a refused batch per step.
    rest_cols = rest_gen.predictions
    truths = [
        rest_gen.ground_truth[i] if rest_gen.labeled[i] else None for i in range(len(rest_cols))
    ]
    events["rest"] = len(rest_cols)
    labeled["rest"] = int(rest_gen.labeled.sum())
    rest = [_rest_event(r, truths[i]) for i, r in enumerate(event_records(rest_cols))]
    batches = [rest[i : i + 50] for i in range(0, len(rest), 50)]
    for b, batch in enumerate(batches):
        slices[b % steps].rest.append(batch)
        slices[(b + 1) % steps].rest.append(batch)
    for step, s in enumerate(slices):
        fresh = _gen(specs[2], 3, seed + 100 + step)  # never sent in any other form
        bad = [_rest_event(r, None) for r in event_records(fresh.predictions)]
        bad[1]["predicted_label"] = "nul\x00label"
        s.bad_rest.append(bad)
    total = sum(len(s.kafka) for s in slices)
    return Workload(slices, events, labeled, codes, total)


# --- the supervisor and the faults --------------------------------------------------------


class Supervisor:
    """Plays supervisord: runs every service and starts again whatever has exited."""

    def __init__(self, st: Stack, gateway_port: int) -> None:
        self.st = st
        self.port = gateway_port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        self.started_at = time.monotonic()
        self.log: list[tuple[float, str]] = []
        self.kills: Counter[str] = Counter()
        self.server_kills: list[str] = []

    def note(self, what: str) -> None:
        self.log.append((time.monotonic() - self.started_at, what))

    def start(self, name: str) -> None:
        extra = dict(WORKER_ENV)
        if name == "gateway":
            extra = {
                "CALIBER_GATEWAY_PORT": str(self.port),
                "CALIBER_GATEWAY_KEY_CACHE_SECONDS": "0",
            }
        self.procs[name] = start_service(
            name, self.st.settings, self.st.logs / f"{name}.log", **extra
        )
        self.starts[name] += 1

    def revive(self) -> None:
        for name in SERVICES:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    self.note(f"{name} had exited ({proc.returncode}); started again")
                self.start(name)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            self.note(f"SIGKILL {name} (pid {proc.pid})")
            self.kills[name] += 1
        self.start(name)

    def kill_server(self, name: str) -> None:
        server = {"kafka": Kafka, "redis": Redis, "postgres": Postgres}[name](self.st.settings)
        pid = server.pid()
        assert pid is not None, f"{name} is not running"
        if name == "redis":  # daemonised: its own process, not a group leader
            os.kill(pid, signal.SIGKILL)
        else:  # the server and its children (PostgreSQL's backends) at once
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.note(f"SIGKILL {name} server (pid {pid})")
        self.server_kills.append(name)
        time.sleep(2)  # the services meet the outage
        up = self.st.caliber("stack", "up", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        self.note(f"{name} server restarted (`caliber stack up`)")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)  # the counts are taken: no need to wait for a slow stop
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def schedule(rng: random.Random) -> list[str]:
    """``STEPS`` faults: every service at least once, ``KILLS`` service kills in all, each
    server once, in a seeded random order; the last steps kill nothing."""
    kills = list(SERVICES) + [rng.choice(SERVICES) for _ in range(KILLS - len(SERVICES))]
    faults = kills + [f"server:{s}" for s in SERVERS]
    rng.shuffle(faults)
    return faults + ["none"] * (STEPS - len(faults))


def _post(base: str, headers: dict[str, str], batch: list[dict[str, Any]], sup: Supervisor) -> int:
    """POST a batch until the gateway answers with a verdict (it may be down or restarting)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            r = httpx.post(
                f"{base}/api/predictions/batch", json={"events": batch}, headers=headers, timeout=30
            )
            if r.status_code < 500:
                return r.status_code
        except httpx.HTTPError:
            pass
        sup.revive()
        time.sleep(0.5)
    raise AssertionError("the gateway gave no verdict within 300 s")


# --- measuring ----------------------------------------------------------------------------


def _measure(st: Stack, base: str, headers: dict[str, str], ids: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(st.settings.postgres_url, connect_timeout=5) as conn:
        for version, n, n_lab in conn.execute(
            "SELECT model_version, count(*), count(ground_truth) FROM predictions "
            "GROUP BY model_version"
        ).fetchall():
            out[f"postgres predictions {version}"] = n
            out[f"postgres labeled {version}"] = n_lab
    for version, mid in ids.items():
        cal = httpx.get(
            f"{base}/api/calibration",
            params={"model_version_id": mid, "window": "all"},
            headers=headers,
            timeout=10,
        ).json()
        out[f"api events {version}"] = cal["n_predictions"]
        out[f"api labeled {version}"] = cal["n_labeled"]
    return out


def _register(
    base: str, headers: dict[str, str], specs: tuple[ModelSpec, ...] = SPECS
) -> dict[str, int]:
    ids = {}
    for spec in specs:
        r = httpx.post(
            f"{base}/api/models",
            json={"name": spec.name, "version": spec.version},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 201, r.text
        ids[spec.version] = int(r.json()["id"])
    return ids


def _send(producer: Any, s: Slice) -> None:
    for topic, key, value in s.kafka:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the queue is full while Kafka is down
                producer.poll(0.1)
        producer.poll(0)


def _campaign(
    sup: Supervisor, work: Workload, base: str, headers: dict[str, str], rng: random.Random
) -> None:
    """Send every slice; after each, at a random moment, the next fault of the schedule."""
    producer = make_producer(sup.st.settings, log_level=0)  # quiet while Kafka is down
    for s, fault in zip(work.slices, schedule(rng), strict=True):
        _send(producer, s)
        for batch in s.rest:  # each batch twice: the second is a duplicate
            assert _post(base, headers, batch, sup) == 202
        for batch in s.bad_rest:  # refused whole, nothing of it accepted
            assert _post(base, headers, batch, sup) == 422
        time.sleep(rng.uniform(0.2, 3.0))
        if fault.startswith("server:"):
            sup.kill_server(fault.split(":", 1)[1])
        elif fault != "none":
            sup.kill(fault)
        sup.revive()
    assert producer.flush(300) == 0, "messages not delivered to Kafka"


def _expected_counts(work: Workload) -> dict[str, int]:
    expected: dict[str, int] = {}
    for version in work.events:
        expected[f"api events {version}"] = work.events[version]
        expected[f"api labeled {version}"] = work.labeled[version]
        expected[f"postgres predictions {version}"] = work.events[version]
        expected[f"postgres labeled {version}"] = work.labeled[version]
    return expected


def _settled(
    sup: Supervisor, base: str, headers: dict[str, str], ids: dict[str, int], want: dict[str, int]
) -> dict[str, Any]:
    """The API and PostgreSQL counts once they equal ``want`` (or at the timeout), measured
    again a few seconds later: anything counted twice would show by then."""
    deadline = time.monotonic() + 600
    shown = 0.0
    while time.monotonic() < deadline:
        sup.revive()
        try:
            now = _measure(sup.st, base, headers, ids)
            if now == want:
                sup.note("API and PostgreSQL counts reached the expected ones")
                break
            if time.monotonic() - shown >= 60:  # which count lags, for a slow campaign
                shown = time.monotonic()
                short = {k: f"{now.get(k)}/{v}" for k, v in want.items() if now.get(k) != v}
                sup.note(f"still short: {short}")
        except (httpx.HTTPError, psycopg.Error, KeyError):
            pass
        time.sleep(2)
    else:
        sup.note("API and PostgreSQL counts still short after 600 s")
    time.sleep(5)
    return _measure(sup.st, base, headers, ids)


def _topic_counts(st: Stack, work: Workload) -> tuple[dict[str, int], dict[str, int]]:
    """Expected and measured: event ids on the decision topic, dead letters by code."""
    topics = Topics.for_namespace(st.settings.topic_namespace)
    reader = TopicReader(st.settings, [topics.decisions, topics.deadletter], CODEC)
    n_events = sum(work.events.values())
    n_dead = sum(work.dead_letters.values())
    try:
        reader.wait_for(
            lambda: (
                len(set(event_ids_on(reader, topics.decisions))) >= n_events
                and len(reader.records[topics.deadletter]) >= n_dead
            ),
            180,
            "every decision and dead letter",
        )
    except AssertionError:
        pass  # short: the table shows by how much
    finally:
        reader.poll(3.0)  # anything decided twice would show up now
        reader.close()
    decided = event_ids_on(reader, topics.decisions)
    expected = {
        "decision topic: distinct event ids": n_events,
        "decision topic: total event ids": n_events,
    }
    measured = {
        "decision topic: distinct event ids": len(set(decided)),
        "decision topic: total event ids": len(decided),
    }
    dead = Counter(d.record["error_code"] for d in reader.records[topics.deadletter])
    for code in sorted(set(dead) | set(work.dead_letters)):
        expected[f"dead letters {code}"] = work.dead_letters.get(code, 0)
        measured[f"dead letters {code}"] = dead.get(code, 0)
    return expected, measured


def _report(
    sup: Supervisor, work: Workload, expected: dict[str, int], measured: dict[str, Any]
) -> None:
    print(f"\n== crash campaign: seed {SEED}, {EVENTS:,} events, {work.messages:,} Kafka messages")
    print(f"   counts exact-checked after {time.monotonic() - sup.started_at:.0f} s")
    print("== fault log (seconds from the start)")
    for at, what in sup.log:
        print(f"  {at:7.1f}  {what}")
    print(f"   service starts: {dict(sup.starts)}")
    print_counts(expected, measured, 44)


def print_counts(expected: dict[str, int], measured: dict[str, Any], width: int) -> None:
    """The expected-versus-measured table, a row per count, differences marked."""
    print(f"== {'count':<{width}} {'expected':>9} {'measured':>9}")
    for name, want in expected.items():
        flag = "" if want == measured.get(name) else "  <-- differs"
        print(f"  {name:<{width}} {want:>9} {measured.get(name, '-')!s:>9}{flag}")


@pytest.mark.timeout(int(os.environ.get("CALIBER_CHAOS_TIMEOUT", "1800")))
def test_every_count_is_exact_after_a_crash_campaign(stack: Stack) -> None:
    rng = random.Random(SEED)
    work = workload(Topics.for_namespace(stack.settings.topic_namespace), EVENTS, SEED)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sup = Supervisor(stack, port)
    try:
        sup.revive()
        wait_http(base + "/health", proc=sup.procs["gateway"], timeout=300)
        headers = {"X-API-Key": make_keys(stack.settings, {"a": ("default", ["admin"])})["a"]}
        ids = _register(base, headers)
        _campaign(sup, work, base, headers, rng)
        expected = _expected_counts(work)
        measured = _settled(sup, base, headers, ids, expected)
        on_topics, measured_topics = _topic_counts(stack, work)
        sup.note("decision and dead-letter topics read")
        expected.update(on_topics)
        measured.update(measured_topics)
    finally:
        sup.stop()
    _report(sup, work, expected, measured)
    assert sum(sup.kills.values()) >= KILLS and set(sup.kills) == set(SERVICES), sup.kills
    assert sorted(sup.server_kills) == sorted(SERVERS), sup.server_kills
    assert measured == expected
