"""Two gateway replicas on one stack: every /ws/live client gets every event of its tenant
once whichever replica it is connected to, the outbox publishes each row once, and the
rate limits are shared through Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from confluent_kafka import Consumer

from services.gateway.ratelimit import SharedBuckets, TokenBuckets
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.settings import Settings
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.pipeline_io import rows
from tests.integration.test_gateway_live import collect, decision_batch


@dataclass
class Env:
    settings: Settings
    bases: list[str]
    keys: dict[str, str]
    topics: Topics

    def ws_url(self, replica: int, who: str) -> str:
        return (
            self.bases[replica].replace("http://", "ws://") + f"/ws/live?api_key={self.keys[who]}"
        )


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings, {"admin": ("acme", ["admin"]), "globex": ("globex", ["viewer"])}
    )
    started = [
        start_gateway(
            isolated_settings, tmp_path_factory.mktemp(f"gateway-{i}"), CALIBER_INSTANCE_ID=str(i)
        )
        for i in range(2)
    ]
    try:
        yield Env(
            isolated_settings,
            [base for base, _ in started],
            keys,
            Topics.for_namespace(isolated_settings.topic_namespace),
        )
    finally:
        for _, proc in started:
            proc.terminate()  # type: ignore[attr-defined]
            proc.wait(30)  # type: ignore[attr-defined]


def test_each_live_client_gets_every_event_of_its_tenant_once(env: Env) -> None:
    with httpx.Client(base_url=env.bases[0], headers={"X-API-Key": env.keys["admin"]}) as c:
        model_id = c.post("/api/models", json={"name": "live", "version": "v1"}).json()["id"]
    producer = make_producer(env.settings)
    sent: list[str] = []

    async def scenario() -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
        clients = [await websockets.connect(env.ws_url(r, "admin")) for r in (0, 1)]
        stranger = await websockets.connect(env.ws_url(1, "globex"))
        await asyncio.sleep(0.5)
        t0 = int(time.time() * 1000)
        for i in range(20):
            ids = [str(uuid.uuid4()) for _ in range(50)]
            sent.extend(ids)
            producer.produce(
                env.topics.decisions, decision_batch("v1", model_id, ids, t0 + i), b"acme/live/v1"
            )
        assert producer.flush(30) == 0
        got = [await collect(ws, len(sent), 60) for ws in clients]
        for ws in clients:
            got_more = await collect(ws, 1, 2)  # a second copy would arrive now
            got[clients.index(ws)] += got_more
        leaked = await collect(stranger, 1, 1)
        for ws in (*clients, stranger):
            await ws.close()
        return got, leaked

    got, leaked = asyncio.run(scenario())
    for received in got:
        ids = [e["event_id"] for e in received if e["type"] == "decision"]
        assert Counter(ids) == Counter(sent), "every acme decision once, on either replica"
    assert leaked == []


def test_the_outbox_publishes_each_row_once_with_two_relays(env: Env) -> None:
    """Registry changes through both replicas: each outbox row reaches Kafka once."""
    names = []
    for i in range(12):
        base = env.bases[i % 2]
        with httpx.Client(base_url=base, headers={"X-API-Key": env.keys["admin"]}) as c:
            name = f"outbox-{i}"
            r = c.post("/api/models", json={"name": name, "version": "v1"})
            assert r.status_code == 201, r.text
            names.append(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if rows(env.settings, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == [(0,)]:
            break
        time.sleep(0.5)
    assert rows(env.settings, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == [(0,)]
    total = rows(env.settings, "SELECT count(*) FROM outbox WHERE topic = %s",
                 env.topics.model_updates)[0][0]  # fmt: skip
    consumer = Consumer(consumer_config(env.settings, f"outbox-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([env.topics.model_updates])
    values: list[bytes] = []
    quiet_until = time.monotonic() + 5
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < min(deadline, quiet_until) or len(values) < total:
            if time.monotonic() > deadline:
                break
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None:
                    values.append(bytes(m.value() or b""))
                    quiet_until = time.monotonic() + 3
    finally:
        consumer.close()
    assert len(values) == total, f"{len(values)} messages for {total} outbox rows"
    assert len(set(values)) == total, "no row published twice"
    assert total >= len(names)


def test_rate_limits_are_shared_by_the_replicas(isolated_settings: Settings) -> None:
    """Two replicas' buckets of one key are one bucket: 4 tokens in all, not 4 each."""

    async def scenario() -> list[float]:
        client = aioredis.Redis.from_url(isolated_settings.redis_dsn)
        try:
            replicas = [
                SharedBuckets(TokenBuckets(1.0, 4.0), isolated_settings.redis_prefix, "requests")
                for _ in range(2)
            ]
            waits = []
            for i in range(5):
                waits.append(await replicas[i % 2].take("key-1", 1.0, client))
            return waits
        finally:
            await client.aclose()

    waits = asyncio.run(scenario())
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert 0.9 < waits[4] <= 1.0  # one token at 1/s, less the few ms the calls took


def test_rate_limit_falls_back_to_the_replica_when_redis_fails() -> None:
    async def scenario() -> list[float]:
        dead = aioredis.Redis(port=1, socket_connect_timeout=0.2)
        buckets = SharedBuckets(TokenBuckets(0.001, 2.0), "x:", "requests")
        try:
            return [await buckets.take("k", 1.0, dead) for _ in range(3)]
        finally:
            await dead.aclose()

    waits = asyncio.run(scenario())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
