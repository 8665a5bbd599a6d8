"""Two replicas of a worker in one consumer group: the once-per-model-version work is done
once, by the owner of the model version's partition, and handed over when one is killed."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import redis.asyncio as aioredis

from services.router.app import state_generation
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.routing.state import RouteKeys
from shared.runtime.kafka import make_admin, make_producer
from shared.runtime.ownership import partition_of, topic_partitions
from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import start_service
from tests.integration.drift_io import Scenario, batches, send
from tests.integration.kafka_io import TopicReader
from tests.integration.test_aggregator import wait_counts

INTERVAL_S = 1.0


def one_model_per_partition(partitions: int) -> list[str]:
    """Model names whose keys (``default/<name>/v1``) land on distinct partitions, one each."""
    names: dict[int, str] = {}
    for i in range(1_000):
        name = f"rep{i}"
        names.setdefault(partition_of(f"default/{name}/v1", partitions), name)
        if len(names) == partitions:
            break
    return [names[p] for p in sorted(names)]


def owned_partitions(log: Path, topic: str) -> set[int]:
    """The partitions of ``topic`` a replica owns now, from its log."""
    owned: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        got = re.search(rf"owner of {re.escape(topic)}\[([\d, ]+)\]", line)
        if got:
            owned |= {int(p) for p in got.group(1).split(",")}
        gone = re.search(rf"released {re.escape(topic)}\[([\d, ]*)\]", line)
        if gone and gone.group(1).strip():
            owned -= {int(p) for p in gone.group(1).split(",")}
    return owned


def assignments(log: Path, topic: str) -> Counter[int]:
    """How often each partition of ``topic`` was assigned to a replica, from its log."""
    out: Counter[int] = Counter()
    text = log.read_text(errors="replace")
    for got in re.finditer(rf"owner of {re.escape(topic)}\[([\d, ]+)\]", text):
        out.update(int(p) for p in got.group(1).split(","))
    return out


def test_two_aggregators_publish_each_snapshot_once_and_hand_over_on_a_kill(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    topics = Topics.for_namespace(settings.topic_namespace)
    partitions = topic_partitions(make_admin(settings), topics.decisions)
    assert partitions >= 4
    names = one_model_per_partition(partitions)
    breaching = names[0]
    reader = TopicReader(settings, [topics.metrics, topics.alerts], AvroCodec())
    env = {
        "CALIBER_SNAPSHOT_INTERVAL_SECONDS": str(INTERVAL_S),
        "CALIBER_ALERT_MIN_LABELED": "200",
    }
    logs = {r: tmp_path / f"aggregator-{r}.log" for r in ("a", "b")}
    procs: dict[str, subprocess.Popen[bytes]] = {
        r: start_service("aggregator", settings, logs[r], CALIBER_INSTANCE_ID=r, **env)
        for r in ("a", "b")
    }
    now = int(time.time() * 1000)
    gens = [
        generate(
            ModelSpec(name=n, version="v1", overconfidence=0.15 if n == breaching else 0.0),
            600,
            seed=i,
            start_ms=now - 10 * 60_000,
            rate_per_s=2,
        )
        for i, n in enumerate(names)
    ]
    try:
        for g in gens:
            send_decisions_and_labels(settings, g)
        for g in gens:
            wait_counts(settings, g.predictions.key, "1h", 600, int(g.labeled.sum()))

        def snapshots() -> list[tuple[str, str, int]]:
            return [
                (d.record["model_name"], d.record["window"], d.record["computed_at_ms"])
                for d in reader.records[topics.metrics]
            ]

        def ece_raises() -> list[dict[str, object]]:
            return [
                d.record
                for d in reader.records[topics.alerts]
                if d.record["metric"] == "ece" and d.record["severity"] != "resolved"
            ]

        reader.wait_for(
            lambda: {m for m, _, _ in snapshots()} == set(names) and len(ece_raises()) >= 1,
            60,
            "snapshots of every model version and the ECE alert",
            list(procs.values()),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            owned = {r: owned_partitions(logs[r], topics.decisions) for r in procs}
            if owned["a"] and owned["b"] and owned["a"] | owned["b"] == set(range(partitions)):
                break
            time.sleep(0.5)
        assert owned["a"] and owned["b"], f"both replicas must own partitions: {owned}"
        assert not owned["a"] & owned["b"], owned
        # Kill the owner of the breaching model version.
        victim = "a" if partition_of(f"default/{breaching}/v1", partitions) in owned["a"] else "b"
        survivor = "b" if victim == "a" else "a"
        taken = {n for n in names if partition_of(f"default/{n}/v1", partitions) in owned[victim]}
        killed_ms = int(time.time() * 1000)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)

        def taken_over() -> bool:
            after = {m for m, _, at in snapshots() if at > killed_ms}
            return taken <= after

        reader.wait_for(
            taken_over, 10 + 15, "the survivor's snapshots of the victim's model versions",
            [procs[survivor]],
        )  # fmt: skip
        took_s = (
            min(at for m, _, at in snapshots() if at > killed_ms and m in taken) - killed_ms
        ) / 1000
        reader.poll(4 * INTERVAL_S)
        assert owned_partitions(logs[survivor], topics.decisions) == set(range(partitions))

        every = snapshots()
        repeats = [s for s, n in Counter(every).items() if n > 1]
        assert not repeats, repeats
        times: dict[tuple[str, str], list[int]] = defaultdict(list)
        for m, w, at in every:
            times[(m, w)].append(at)
        for (m, w), ats in times.items():
            ats.sort()
            gaps = [b - a for a, b in itertools.pairwise(ats)]
            # One publisher per model version: its rounds are an interval apart. Only a
            # handover (the old owner's last round, then the new owner's first at once)
            # may come closer, at most once per assignment of its partition after the first.
            short = [g for g in gaps if g < 0.5 * INTERVAL_S * 1000]
            p = partition_of(f"default/{m}/v1", partitions)
            handovers = sum(assignments(logs[r], topics.decisions)[p] for r in logs) - 1
            assert len(short) <= handovers, (m, w, gaps, handovers)
        raises = ece_raises()
        assert len(raises) == 1, raises
        assert raises[0]["model_name"] == breaching
        assert took_s < 10 + 10, took_s  # session timeout + a round, with slack for 2 cores
        print(f"handover: the survivor's first snapshot {took_s:.1f} s after the kill")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        reader.close()


def test_two_drift_workers_raise_and_resolve_each_breach_once_across_a_kill(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """x0 of two model versions shifts and comes back; the owner of one of them is killed
    between its alert and the end of the shift: the survivor takes over its partitions and
    records the recovery, and no breach is raised twice."""
    settings = isolated_settings
    topics = Topics.for_namespace(settings.topic_namespace)
    partitions = topic_partitions(make_admin(settings), topics.predictions)
    names = one_model_per_partition(partitions)[:2]
    shift_at, window = 20_000, 6_000
    shift_back = shift_at + 2 * window
    total = shift_back + 2 * window
    codec = AvroCodec()
    reader = TopicReader(settings, [topics.alerts], codec)
    env = {
        "CALIBER_DRIFT_WINDOW_SECONDS": "60",
        "CALIBER_DRIFT_BUCKET_SECONDS": "10",
        "CALIBER_DRIFT_EVAL_SECONDS": "0.25",
        "CALIBER_DRIFT_REFERENCE_EVENTS": "5000",
    }
    logs = {r: tmp_path / f"drift-{r}.log" for r in ("a", "b")}
    procs = {
        r: start_service("drift", settings, logs[r], CALIBER_INSTANCE_ID=r, **env)
        for r in ("a", "b")
    }
    scenarios = [Scenario(n, shift_at=shift_at, shift="numeric", shift_until=shift_back)
                 for n in names]  # fmt: skip
    streams = [batches(s, total, seed=i) for i, s in enumerate(scenarios)]
    producer = make_producer(settings)

    def x0(name: str) -> list[dict[str, object]]:
        return [
            d.record
            for d in reader.records[topics.alerts]
            if d.record["kind"] == "drift"
            and d.record["model_name"] == name
            and d.record["feature"] == "x0"
        ]

    try:
        time.sleep(12)  # both replicas in the group before the data comes
        victim: str | None = None
        for i, step in enumerate(zip(*streams, strict=True)):
            started = time.monotonic()
            for cols in step:
                send(producer, topics.predictions, codec, cols)
            producer.flush(10)
            if victim is None and (i + 1) * 500 >= shift_at + window:
                reader.poll(0.1)
                owned = {r: owned_partitions(logs[r], topics.predictions) for r in procs}
                mine = partition_of(f"default/{names[0]}/v1", partitions)
                victim = "a" if mine in owned["a"] else "b"
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(10)
            time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
        survivor = "b" if victim == "a" else "a"
        reader.wait_for(
            lambda: all(any(a["severity"] == "resolved" for a in x0(n)) for n in names),
            60, "every shift raised and resolved", [procs[survivor]],
        )  # fmt: skip
        reader.poll(3.0)
        for n in names:
            severities = [a["severity"] for a in x0(n)]
            assert len(severities) == 2 and severities[-1] == "resolved", (n, severities)
            ids = [a["alert_id"] for a in x0(n)]
            assert len(set(ids)) == len(ids), (n, ids)
        assert owned_partitions(logs[survivor], topics.predictions) == set(range(partitions))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        reader.close()


def test_two_router_replicas_agree_on_one_consumer_group(isolated_settings: Settings) -> None:
    """The router's consumer group is named by the generation of its Redis state: replicas
    starting together must join one group, or each would count every outcome."""

    async def both() -> list[str]:
        clients = [aioredis.Redis.from_url(isolated_settings.redis_dsn) for _ in range(4)]
        keys = RouteKeys(isolated_settings.redis_prefix)
        try:
            return list(await asyncio.gather(*(state_generation(c, keys) for c in clients)))
        finally:
            for c in clients:
                await c.aclose()

    generations = asyncio.run(both())
    assert len(set(generations)) == 1 and len(generations[0]) == 12
