"""Ownership of model versions by partition, on the real Kafka and Redis: the mapping equals
where the producer puts messages, and the fence refuses a stale owner."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_admin, make_producer
from shared.runtime.ownership import (
    OwnerFence,
    Ownership,
    outbox_key,
    partition_of,
    topic_partitions,
)
from shared.settings import Settings


def test_partition_of_is_where_the_producer_puts_each_key(isolated_settings: Settings) -> None:
    settings = isolated_settings
    topic = Topics.for_namespace(settings.topic_namespace).decisions
    partitions = topic_partitions(make_admin(settings), topic)
    assert partitions >= 4
    keys = [f"tenant-{i % 7}/model-{i}/v{i % 3}" for i in range(2_000)]
    producer = make_producer(settings)
    for k in keys:
        producer.produce(topic, b"x", k.encode())
    assert producer.flush(30) == 0
    consumer = Consumer(consumer_config(settings, f"mapping-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while len(seen) < len(keys) and time.monotonic() < deadline:
            for m in consumer.consume(1_000, timeout=0.5):
                if m.error() is None and m.key() is not None:
                    seen[m.key().decode()] = int(m.partition())  # type: ignore[union-attr]
    finally:
        consumer.close()
    assert len(seen) == len(keys)
    assert {k: partition_of(k, partitions) for k in keys} == seen
    assert len(set(seen.values())) == partitions  # every partition got keys: a real test


def _tps(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


def _models_of(partition: int, partitions: int, n: int) -> list[str]:
    out = [f"t/m{i}/v1" for i in range(500) if partition_of(f"t/m{i}/v1", partitions) == partition]
    return out[:n]


def test_a_stale_owner_cannot_save_after_the_new_owner_claimed(
    isolated_settings: Settings,
) -> None:
    """A zombie (paused while its partition was given away) finds its write refused."""
    prefix = f"{isolated_settings.redis_prefix}zombie:"
    group = f"g-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        client = aioredis.Redis.from_url(isolated_settings.redis_dsn)
        try:
            old = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            new = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            (model,) = _models_of(2, 6, 1)
            state_key = f"{prefix}agg:alert:{{{model}}}:ece"
            await old.assigned(_tps("d", 2))
            async with old.round():
                old_token = await old.token(model)
                assert old_token is not None
                first = await old.fence.save(model, old_token, {state_key: "old-1"}, {})
                assert first == {}
            # The session times out; the group gives partition 2 to the other replica.
            await new.assigned(_tps("d", 2))
            async with new.round():
                new_token = await new.token(model)
            assert new_token is not None and new_token > old_token
            # The zombie wakes up in the middle of a round and tries to save an alert.
            async with old.round():
                refused = await old.fence.save(
                    model, old_token, {state_key: "old-2"}, {"alert-z": b"zombie"}
                )
                assert refused is None
                old.refused(model)
                assert not old.owns(model)  # stands down from the partition
            assert await client.get(state_key) == b"old-1"
            assert await client.hgetall(outbox_key(prefix, model)) == {}
            async with new.round():
                assert await new.fence.save(model, new_token, {state_key: "new-1"}, {}) == {}
            assert await client.get(state_key) == b"new-1"
            # A late claim under the old token is refused too.
            assert not await old.fence.claim(model, old_token)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_the_new_owner_publishes_what_a_dead_owner_left_in_the_outbox(
    isolated_settings: Settings,
) -> None:
    prefix = f"{isolated_settings.redis_prefix}outbox:"
    group = f"g-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        client = aioredis.Redis.from_url(isolated_settings.redis_dsn)
        try:
            dead = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            heir = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            (model,) = _models_of(4, 6, 1)
            await dead.assigned(_tps("d", 4))
            async with dead.round():
                token = await dead.token(model)
                assert token is not None
                saved = await dead.fence.save(model, token, {}, {"a1": b"raise"})
            assert saved == {"a1": b"raise"}
            # Killed before Kafka acknowledged the alert: it stays in the outbox.
            await heir.assigned(_tps("d", 4))
            async with heir.round():
                heir_token = await heir.token(model)
                assert heir_token is not None
                outbox = await heir.fence.save(model, heir_token, {}, {})
                assert outbox == {"a1": b"raise"}
                await heir.fence.delivered(model, list(outbox))
                assert await heir.fence.save(model, heir_token, {}, {}) == {}
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_claims_order_two_owners_of_one_model_version(isolated_settings: Settings) -> None:
    """Both replicas think they own the partition (a zombie's late assignment): a save
    applies only under the latest claim, so one alert rule is never moved twice."""
    prefix = f"{isolated_settings.redis_prefix}race:"
    group = f"g-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        client = aioredis.Redis.from_url(isolated_settings.redis_dsn)
        try:
            a = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            b = Ownership("d", group, OwnerFence(client, prefix), lambda: 6)
            (model,) = _models_of(1, 6, 1)
            await a.assigned(_tps("d", 1))
            await b.assigned(_tps("d", 1))
            async with a.round():
                ta = await a.token(model)  # claims first, with the smaller token
            async with b.round():
                tb = await b.token(model)
            assert ta is not None and tb is not None and tb > ta
            # Both read the same state and decide to raise; only one save applies.
            assert await a.fence.save(model, ta, {}, {"raise-a": b"a"}) is None
            assert await b.fence.save(model, tb, {}, {"raise-b": b"b"}) == {"raise-b": b"b"}
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_revocation_waits_for_the_round_in_flight(isolated_settings: Settings) -> None:
    prefix = f"{isolated_settings.redis_prefix}revoke:"

    async def scenario() -> None:
        client = aioredis.Redis.from_url(isolated_settings.redis_dsn)
        try:
            own = Ownership("d", "g", OwnerFence(client, prefix), lambda: 6)
            (model,) = _models_of(3, 6, 1)
            await own.assigned(_tps("d", 3))
            assert own.take_wake()  # an assignment wakes the evaluator
            order: list[str] = []
            in_round = asyncio.Event()

            async def round_() -> None:
                async with own.round():
                    assert own.owns(model)
                    in_round.set()
                    await asyncio.sleep(0.3)
                    order.append("round done")

            task = asyncio.ensure_future(round_())
            await in_round.wait()
            revoke = asyncio.ensure_future(own.revoked(_tps("d", 3)))
            await asyncio.sleep(0.05)
            assert not own.owns(model)  # the round skips it from now on
            assert not revoke.done()  # but the partition is not released yet
            await revoke
            order.append("released")
            await task
            assert order == ["round done", "released"]
        finally:
            await client.aclose()

    asyncio.run(scenario())
