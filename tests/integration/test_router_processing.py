"""The router's processing step against the real Redis: replays, out-of-order arrivals, decay.

Messages are built in memory (confluent-kafka's ``Message`` takes topic, partition and
offset), so the offset fence sees exactly what a consumer would hand it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from confluent_kafka import Message

from services.router.processing import RouterProcessor
from services.router.store import RouterStore
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.routing.state import HOUR_MS, ROUTE_DECISION_KEY, RouteKeys
from shared.runtime import redis_client
from shared.settings import Settings

CODEC = AvroCodec()
HALF_LIFE_S = 3600.0
T0 = 1_800_000_000_000


def _route(kind: str, decision_id: str, ms: int, score: float = 0.0, path: str = "a") -> bytes:
    return CODEC.encode(
        "RouteEvent",
        {"kind": kind, "decision_id": decision_id, "tenant": "acme", "goal": "g", "path": path,
         "forced": False, "fallback": False, "cost": None, "latency_ms": None, "score": score,
         "source": "api", "time_ms": ms},
    )  # fmt: skip


class Feed:
    """Offsets per topic partition 0, as a consumer would number them."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.offsets: dict[str, int] = {}

    def msg(self, topic: str, value: bytes) -> Message:
        off = self.offsets.get(topic, -1) + 1
        self.offsets[topic] = off
        return Message(topic=topic, partition=0, offset=off, value=value)


@dataclass
class Parts:
    dsn: str
    keys: RouteKeys
    feed: Feed

    @asynccontextmanager
    async def processor(self) -> AsyncIterator[RouterProcessor]:
        client = redis_client.async_client(self.dsn)
        try:
            yield RouterProcessor(
                self.feed.topics,
                CODEC,
                RouterStore(client, self.keys.prefix),
                HALF_LIFE_S,
                3600,
                3600,
            )
        finally:
            await client.aclose()


@pytest.fixture
def parts(isolated_settings: Settings) -> Parts:
    prefix = f"{isolated_settings.redis_prefix}{uuid.uuid4().hex[:6]}:"
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    return Parts(isolated_settings.redis_dsn, RouteKeys(prefix), Feed(topics))


async def _with(parts: Parts, body: Callable[[RouterProcessor], Awaitable[None]]) -> None:
    async with parts.processor() as proc:
        await body(proc)


async def _post(dsn: str, keys: RouteKeys, path: str = "a") -> dict[str, float]:
    client = redis_client.async_client(dsn)
    try:
        raw = await client.hgetall(keys.post("acme", "g", path))
    finally:
        await client.aclose()
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def test_replay_counts_nothing_twice_and_decay_ignores_order(parts: Parts) -> None:
    feed, keys, dsn = parts.feed, parts.keys, parts.dsn
    t = feed.topics.routing

    async def go(proc: RouterProcessor) -> None:
        # The later decision's outcome first, then the earlier one's; then the same batch again.
        batch = [
            feed.msg(t, _route("decision", "d2", T0 + HOUR_MS)),
            feed.msg(t, _route("decision", "d1", T0)),
            feed.msg(t, _route("outcome", "d2", T0 + HOUR_MS, 1.0)),
            feed.msg(t, _route("outcome", "d1", T0 + HOUR_MS, 1.0)),
        ]
        await proc(batch)
        await proc(batch)
        post = await _post(dsn, keys)
        # d1 (an hour older) weighs 0.5 at the reference time of d2.
        assert post["n"] == 2 and post["d"] == 2 and post["t"] == T0 + HOUR_MS
        assert post["s"] == pytest.approx(1.5) and post["f"] == pytest.approx(0.0)
        # A second outcome of d1, in a later batch, is a duplicate.
        await proc([feed.msg(t, _route("outcome", "d1", T0 + 2 * HOUR_MS, 0.0))])
        assert (await _post(dsn, keys))["n"] == 2

    asyncio.run(_with(parts, go))


def test_outcome_before_its_decision_and_label_before_its_prediction_wait(parts: Parts) -> None:
    feed, keys, dsn = parts.feed, parts.keys, parts.dsn
    t = feed.topics
    pred = CODEC.encode(
        "PredictionBatch",
        {"tenant": "acme", "model_name": "m", "model_version": "v1", "event_ids": ["e1"],
         "event_time_ms": [T0], "predicted_labels": ["cat"], "confidences": [0.9],
         "metadata": [{ROUTE_DECISION_KEY: "d9"}]},
    )  # fmt: skip
    label = CODEC.encode(
        "LabelBatch",
        {"tenant": "acme", "model_name": None, "model_version": None, "event_ids": ["e1"],
         "ground_truths": ["dog"], "sources": ["feed"], "label_time_ms": [T0]},
    )  # fmt: skip

    async def go(proc: RouterProcessor) -> None:
        await proc([feed.msg(t.routing, _route("outcome", "d8", T0, 1.0))])  # no decision yet
        await proc([feed.msg(t.labels, label)])  # no prediction yet
        assert await _post(dsn, keys) == {}
        await proc([feed.msg(t.routing, _route("decision", "d8", T0))])
        await proc([feed.msg(t.routing, _route("decision", "d9", T0))])
        await proc([feed.msg(t.predictions, pred)])
        post = await _post(dsn, keys)
        # d8's API success and d9's wrong label (dog ≠ cat), both at T0.
        assert post["n"] == 2 and post["s"] == pytest.approx(1.0)
        assert post["f"] == pytest.approx(1.0)

    asyncio.run(_with(parts, go))
