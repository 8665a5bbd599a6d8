"""Caliber's Redis state on a 3-master Redis Cluster against one Redis, same input.

The processing steps of the aggregator (calibration windows, joins, unlabeled counts),
the drift worker (reference window, histograms, scores), the ingest dedupe and the router
run in process on messages built in memory (as a consumer hands them over), once on the
stack's Redis and once on a private cluster (``tests.integration.redis_cluster``), with the
same key prefix; their answers, key counts and memory per model version must agree. On the
cluster the fence refuses a replayed batch, and a crash between two parts of one batch
replayed with other batch boundaries counts everything exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Message
from redis.asyncio.cluster import RedisCluster

from services.aggregator.processing import AggregatorProcessor
from services.aggregator.store import AggregatorStore
from services.drift.evaluate import Evaluator
from services.drift.processing import DriftProcessor, ProfileCache, WindowConfig
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore
from services.ingest.dedupe import Claim, Deduper
from services.policy.processing import decide
from services.router.processing import RouterProcessor
from services.router.store import RouterStore
from shared.contracts.batches import LabelColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY
from shared.recalibration.serving import Candidate
from shared.runtime import redis_client
from shared.runtime.offset_fence import Effect
from shared.runtime.redis_client import hash_tag, tagged
from shared.settings import Settings
from shared.windows.calibration import WindowReader
from shared.windows.rollout import rollout_key
from shared.windows.segments import SegmentState
from simulator.generator import ModelSpec, generate
from tests.integration.redis_cluster import LocalRedisCluster, redis_cluster
from tests.integration.test_router_processing import Feed, _route

CODEC = AvroCodec()
SPECS = [
    ModelSpec(name="churn", version="3", tenant="acme", numeric_features=2, categorical_features=1),
    ModelSpec(name="fraud", version="1", tenant="acme", overconfidence=0.1, numeric_features=1),
]
N = 2_000
CLUSTER_KEY_BYTES = 16
"""What Redis 7.0 in cluster mode adds to ``MEMORY USAGE`` of every key: the dict entry's
slot-to-keys links (two pointers)."""
BATCH = 200


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with redis_cluster() as c:
        yield c


@dataclass
class Servers:
    single: str
    cluster: str
    prefix: str


@pytest.fixture
def servers(isolated_settings: Settings, cluster: LocalRedisCluster) -> Servers:
    prefix = f"{isolated_settings.redis_prefix}{uuid.uuid4().hex[:6]}:"
    return Servers(isolated_settings.redis_dsn, cluster.url, prefix)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Any]:
    r = redis_client.async_client(url)
    try:
        yield r
    finally:
        await r.aclose()


def _msg(topic: str, partition: int, offset: int, value: bytes) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=value)


def aggregator_input(topics: Topics, seed: int = 7) -> list[Message]:
    """Decisions and labels of two model versions, one partition each; a few labels come
    before their prediction (they wait as pending records)."""
    start_ms = int(time.time() * 1000) - 3_600_000
    out: list[Message] = []
    for p, spec in enumerate(SPECS):
        gen = generate(spec, N, seed + p, start_ms, grid=0.001)
        cols = gen.predictions
        for i, s in enumerate(range(0, N, BATCH)):
            rows = np.arange(s, min(s + BATCH, N))
            labeled = rows[gen.labeled[rows]]
            labels = LabelColumns(
                tenant=cols.tenant,
                model_name=cols.model_name,
                model_version=cols.model_version,
                event_ids=[cols.event_ids[i] for i in labeled.tolist()],
                ground_truths=[gen.ground_truth[i] for i in labeled.tolist()],
                sources=["feed"] * len(labeled),
                label_time_ms=gen.label_time_ms[labeled],
            )
            lab = _msg(topics.labels, p, i, CODEC.encode("LabelBatch", labels.to_record()))
            # the first model version has a canary beside its map and segments by c0
            d = decide(
                cols.take(rows),
                0.7,
                IDENTITY,
                "registry",
                start_ms,
                candidate=Candidate(IDENTITY, "canary", 0.5) if p == 0 else None,
                segment_key="c0" if spec.categorical_features else None,
            )
            dec = _msg(topics.decisions, p, i, CODEC.encode("DecisionBatch", d.to_record()))
            # every third batch's labels arrive first
            out += [lab, dec] if i % 3 == 0 else [dec, lab]
    # interleave the two partitions as a consumer would see them
    half = len(out) // 2
    return [m for pair in zip(out[:half], out[half:], strict=True) for m in pair]


def _chunks(messages: list[Message], size: int) -> list[list[Message]]:
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def _model(spec: ModelSpec) -> str:
    return f"{spec.tenant}/{spec.name}/{spec.version}"


async def _aggregate(url: str, prefix: str, batches: list[list[Message]]) -> tuple[int, int]:
    topics = Topics.for_namespace("c19")
    async with client(url) as r:
        proc = AggregatorProcessor(topics, CODEC, AggregatorStore(r, prefix, 7 * 86400))
        for b in batches:
            await proc(b)
        return proc.events_counted, proc.labels_joined


async def _answers(url: str, prefix: str) -> dict[str, Any]:
    async with client(url) as r:
        reader = WindowReader(r, prefix)
        out: dict[str, Any] = {"models": await reader.models()}
        for spec in SPECS:
            m = _model(spec)
            for w in ("24h", "all"):
                out[f"{m} {w}"] = await reader.calibration(m, w)
                rc = await reader.risk_coverage(m, w)
                out[f"{m} {w} aurc"] = (rc.n_labeled, rc.aurc, rc.points)
            out[f"{m} pending"] = await reader.labels_pending(m, 7 * 86400, int(time.time()))
            out[f"{m} series"] = await reader.timeseries(m, "1h")
            segments = SegmentState(r, prefix)
            counts, _ = await segments.counts(m)
            out[f"{m} segments"] = counts
            out[f"{m} windows"] = await segments.windows(m, sorted(counts))
            rollout = [k async for k in r.scan_iter(match=f"{rollout_key(prefix, m, '')}*")]
            # candidate version → its paired stats
            out[f"{m} rollout"] = {
                k.decode().rsplit(":", 1)[1]: await r.hgetall(k) for k in sorted(rollout)
            }
        return out


async def _footprint(url: str, prefix: str) -> dict[str | None, tuple[int, int]]:
    """Keys and ``MEMORY USAGE`` bytes per hash tag (None: keys without one), fences apart."""
    out: dict[str | None, list[int]] = {}
    async with client(url) as r:
        keys = [k.decode() async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
        for k in keys:
            if ":offsets" in k:
                continue
            usage = await r.memory_usage(k)
            entry = out.setdefault(hash_tag(k), [0, 0])
            entry[0] += 1
            entry[1] += int(usage)
    return {t: (n, b) for t, (n, b) in out.items()}


def test_the_factory_gives_the_cluster_client(servers: Servers, cluster: LocalRedisCluster) -> None:
    async def go() -> None:
        for url in (cluster.url, cluster.node_url):
            async with client(url) as r:
                assert isinstance(r, RedisCluster)
                assert await r.ping()
                assert sorted(int(n.port) for n in r.get_primaries()) == sorted(cluster.ports)
        async with client(servers.single) as r:
            assert not redis_client.is_cluster(r)

    asyncio.run(go())


def test_aggregator_answers_keys_and_memory_match_one_redis(servers: Servers) -> None:
    messages = aggregator_input(Topics.for_namespace("c19"))
    batches = _chunks(messages, 5)
    labeled = sum(
        int(generate(s, N, 7 + p, 0, grid=0.001).labeled.sum()) for p, s in enumerate(SPECS)
    )

    async def go() -> None:
        single = await _aggregate(servers.single, servers.prefix, batches)
        on_cluster = await _aggregate(servers.cluster, servers.prefix, batches)
        assert single == on_cluster == (2 * N, labeled)
        a = await _answers(servers.single, servers.prefix)
        b = await _answers(servers.cluster, servers.prefix)
        assert a == b
        churn = a["acme/churn/3 all"]
        assert churn.n_predictions == N and churn.n_labeled > 0
        # segments (by c0) and the canary's paired stats were written, and agree
        assert sum(v for k, v in a["acme/churn/3 segments"].items() if "=" in k) == churn.n_labeled
        ((_, fields),) = a["acme/churn/3 rollout"].items()
        assert int(fields[b"n"]) == N and int(fields[b"L"]) == churn.n_labeled
        assert a["acme/fraud/1 segments"] == {} and a["acme/fraud/1 rollout"] == {}
        fa = await _footprint(servers.single, servers.prefix)
        fb = await _footprint(servers.cluster, servers.prefix)
        assert set(fa) == set(fb)
        for tag, (keys, size) in fa.items():
            # the same keys and bytes per model version (and shard) on one Redis as on the
            # cluster, whose only extra is its own index of keys per slot: 16 B per key
            assert fb[tag] == (keys, size + CLUSTER_KEY_BYTES * keys), tag
        assert fa[_model(SPECS[0])][0] > 0

    asyncio.run(go())


def test_the_fence_refuses_a_replay_on_the_cluster(servers: Servers) -> None:
    topics = Topics.for_namespace("c19")
    batches = _chunks(aggregator_input(topics), 5)

    async def go() -> None:
        async with client(servers.cluster) as r:
            store = AggregatorStore(r, servers.prefix, 7 * 86400)
            proc = AggregatorProcessor(topics, CODEC, store)
            await proc(batches[0])
            counted = proc.events_counted
            assert counted > 0
            await proc(batches[0])  # the same batch again: dropped before any work
            assert proc.events_counted == counted
            # and the fenced call itself refuses it, part by part
            key = f"{servers.prefix}probe:{tagged('acme/churn/3')}"
            effect = Effect(incr=[(key, 0, {"n": 1})])
            assert await store.fence.apply(batches[0], effect) is False
            assert await r.hget(key, "n") is None
            later = [_msg(topics.labels, 7, 0, b"")]
            assert await store.fence.apply(later, Effect(incr=[(key, 0, {"n": 1})])) is True
            assert await store.fence.apply(later, Effect(incr=[(key, 0, {"n": 1})])) is False
            assert int(await r.hget(key, "n")) == 1

    asyncio.run(go())


class Crash(RuntimeError):
    pass


async def _crashing_run(url: str, prefix: str, batch: list[Message], at: int) -> None:
    """Process ``batch`` and die at the ``at``-th fenced part (the parts started before it
    finish, as they would on the server after the client died)."""
    topics = Topics.for_namespace("c19")
    async with client(url) as r:
        store = AggregatorStore(r, prefix, 7 * 86400)
        real = store.fence._part
        calls = 0

        async def part(*args: Any) -> bool:
            nonlocal calls
            calls += 1
            if calls == at:
                await asyncio.sleep(0.2)
                raise Crash
            return await real(*args)

        store.fence._part = part  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await AggregatorProcessor(topics, CODEC, store)(batch)
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("replay", ["longer", "shorter"])
def test_a_crash_between_parts_replays_exactly(servers: Servers, replay: str) -> None:
    topics = Topics.for_namespace("c19")
    messages = aggregator_input(topics)
    batches = _chunks(messages, 6)
    k = 3  # the batch that crashes

    async def go() -> None:
        reference = f"{servers.prefix}ref:"
        await _aggregate(servers.single, reference, batches)
        prefix = f"{servers.prefix}crash:"
        await _aggregate(servers.cluster, prefix, batches[:k])
        # die after the first model version's part, before the second's and the join shards
        await _crashing_run(servers.cluster, prefix, batches[k], at=2)
        async with client(servers.cluster) as r:
            done = {
                x.decode(): int(v) for x, v in (await r.hgetall(f"{prefix}agg:offsets")).items()
            }
            inflight = await r.hgetall(f"{prefix}agg:offsets:inflight")
            assert any(int(v) > done.get(x.decode(), -1) for x, v in inflight.items())
        # the restarted consumer fetches other boundaries than the batch that crashed
        rest = [m for b in batches[k:] for m in b]
        # (the crashed batch was rest[:6]; "shorter" first takes less of it, then a batch
        # that runs past its end, with decisions of both model versions after it)
        if replay == "longer":
            again = [rest[:10], *_chunks(rest[10:], 6)]
        else:
            again = [rest[:2], rest[2:12], *_chunks(rest[12:], 6)]
        await _aggregate(servers.cluster, prefix, again)
        want = await _answers(servers.single, reference)
        got = await _answers(servers.cluster, prefix)
        assert got == want
        assert got["acme/churn/3 all"].n_predictions == N
        assert got["acme/fraud/1 all"].n_predictions == N

    asyncio.run(go())


def drift_input(topics: Topics) -> list[Message]:
    start_ms = int(time.time() * 1000) - 1_800_000
    out = []
    for p, spec in enumerate(SPECS):
        cols = generate(spec, N, 11 + p, start_ms).predictions
        for i, s in enumerate(range(0, N, BATCH)):
            part = cols.take(np.arange(s, min(s + BATCH, N)))
            value = CODEC.encode("PredictionBatch", part.to_record())
            out.append(_msg(topics.predictions, p, i, value))
    return out


async def _drift(url: str, prefix: str, batches: list[list[Message]]) -> dict[str, Any]:
    topics = Topics.for_namespace("c19")
    config = WindowConfig(bucket_seconds=60, window_seconds=3600, reference_events=500)
    async with client(url) as r:
        store = DriftStore(r, prefix)
        proc = DriftProcessor(topics, CODEC, store, ProfileCache(), config)
        for b in batches:
            await proc(b)
        settings = DriftSettings(drift_bucket_seconds=60, drift_window_seconds=3600)
        ev = Evaluator(settings, store, ProfileCache(), None, None, CODEC)  # type: ignore[arg-type]
        out: dict[str, Any] = {"scored": proc.events_scored, "ref": proc.events_reference}
        for spec in SPECS:
            result = await ev.scores(_model(spec))
            assert result is not None
            out[_model(spec)] = (result[0].profile.version, result[1], result[2])
        return out


def test_drift_scores_match_one_redis(servers: Servers) -> None:
    messages = drift_input(Topics.for_namespace("c19"))
    batches = _chunks(messages, 3)

    async def go() -> None:
        a = await _drift(servers.single, servers.prefix, batches)
        b = await _drift(servers.cluster, servers.prefix, batches)
        assert a == b
        assert a["scored"] + a["ref"] == 2 * N and a["ref"] == 2 * 500
        fa = await _footprint(servers.single, servers.prefix)
        fb = await _footprint(servers.cluster, servers.prefix)
        assert set(fa) == set(fb) and fa[_model(SPECS[0])][0] > 0
        for tag, (keys, size) in fa.items():
            assert fb[tag] == (keys, size + CLUSTER_KEY_BYTES * keys), tag

    asyncio.run(go())


def test_ingest_dedupe_matches_one_redis(servers: Servers) -> None:
    claims = [Claim("acme", f"e-{i}", "raw:0:1", "acme/churn/3", 1000 + i) for i in range(300)]
    again = [Claim("acme", f"e-{i}", "raw:0:2") for i in range(0, 600, 2)]

    async def go(url: str) -> tuple[list[bool], list[bool], list[Any]]:
        async with client(url) as r:
            d = Deduper(r, servers.prefix, 600)
            first = await d.claim("seen", claims)
            second = await d.claim("seen", again)
            seen = await d.seen_predictions("acme", ["e-1", "e-299", "e-300"])
            return first, second, seen

    a = asyncio.run(go(servers.single))
    b = asyncio.run(go(servers.cluster))
    assert a == b
    first, second, seen = a
    assert all(first)
    # e-0 … e-298 (even) are another message's: duplicates; e-300 … e-598 are new
    assert second == [i >= 300 for i in range(0, 600, 2)]
    assert seen[0] is not None and seen[0].model_key == "acme/churn/3" and seen[2] is None


def test_router_state_matches_one_redis(servers: Servers) -> None:
    topics = Topics.for_namespace("c19")
    t0 = 1_800_000_000_000

    async def go(url: str) -> dict[str, Any]:
        feed = Feed(topics)
        t = topics.routing
        batch = [
            feed.msg(t, _route("decision", f"d{i}", t0 + i, path="ab"[i % 2])) for i in range(40)
        ]
        batch += [
            feed.msg(t, _route("outcome", f"d{i}", t0 + 50, float(i % 3 == 0))) for i in range(40)
        ]
        async with client(url) as r:
            store = RouterStore(r, servers.prefix)
            proc = RouterProcessor(topics, CODEC, store, 3600.0, 3600, 3600)
            for b in _chunks(batch, 7):
                await proc(b)
            await proc(batch[:20])  # a replay
            posts = {p: await r.hgetall(store.keys.post("acme", "g", p)) for p in "ab"}
            return {"counted": proc.outcomes_counted, "posts": posts}

    a = asyncio.run(go(servers.single))
    b = asyncio.run(go(servers.cluster))
    assert a == b
    assert a["counted"] == 40
    assert int(a["posts"]["a"][b"n"]) == 20 and int(a["posts"]["b"][b"d"]) == 20
