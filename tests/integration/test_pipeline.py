"""The exactly-once batch loop against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

import shared.runtime.pipeline as pipeline_module
from shared.contracts.topics import Topics
from shared.runtime import redis_client
from shared.runtime.kafka import consumer_config, make_producer
from shared.runtime.pipeline import Output, Pipeline, PipelineConfig
from shared.runtime.quarantine import CrashRecord
from shared.settings import Settings


def _read_all(settings: Settings, topic: str, expect: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(consumer_config(settings, f"{settings.topic_namespace}-reader"))
    consumer.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    out.append(m.value())
        # Anything beyond `expect` would be a duplicate: give it a moment to show up.
        for m in consumer.consume(1000, timeout=1.0):
            if m.error() is None:
                out.append(m.value())
    finally:
        consumer.close()
    return out


async def _run_until_read(
    settings: Settings,
    group: str,
    source: str,
    max_messages: int,
    process: Callable[[Sequence[Message]], Awaitable[list[Output]]],
    sink: str,
    expect: int,
) -> list[bytes]:
    """A transactional pipeline from ``source`` until ``expect`` values are read from
    ``sink`` (and a moment more, for duplicates); then stopped."""
    pipeline = Pipeline(
        settings,
        PipelineConfig(
            group_id=group,
            topics=[source],
            transactional_id=f"{group}.0",
            max_messages=max_messages,
        ),
        process,
    )
    task = asyncio.create_task(pipeline.run())
    values = await asyncio.to_thread(_read_all, settings, sink, expect)
    pipeline.stop()
    await asyncio.wait_for(task, 30)
    return values


async def test_every_message_passes_exactly_once(isolated_settings: Settings) -> None:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    producer = make_producer(isolated_settings)
    for i in range(2_000):
        producer.produce(topics.inference_raw, f"m{i}".encode(), f"k{i % 7}".encode())
    assert producer.flush(30) == 0

    async def upper(messages: Sequence[Message]) -> list[Output]:
        return [Output(topics.predictions, m.key(), (m.value() or b"").upper()) for m in messages]

    group = f"{isolated_settings.topic_namespace}-copy"
    values = await _run_until_read(
        isolated_settings, group, topics.inference_raw, 300, upper, topics.predictions, 2_000
    )
    assert sorted(values) == sorted(f"M{i}".encode() for i in range(2_000))


async def test_a_steady_worker_reads_each_partitions_crash_record_once(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once this process has committed an attempt on a partition, the record there is its
    own mark: the next attempts skip reading it (one Redis round trip fewer per batch), and
    the records are still written per attempt, for a process that follows."""
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    producer = make_producer(isolated_settings)
    for i in range(600):
        producer.produce(topics.labels_raw, f"m{i}".encode(), f"k{i % 7}".encode())
    assert producer.flush(30) == 0
    reads: list[dict[tuple[str, int], int]] = []
    batches: list[int] = []

    class CountingRecord(CrashRecord):
        async def suspects(self, starts: dict[tuple[str, int], int]) -> dict:  # type: ignore[type-arg]
            reads.append(dict(starts))
            return await super().suspects(starts)

    monkeypatch.setattr(pipeline_module, "CrashRecord", CountingRecord)

    async def copy(messages: Sequence[Message]) -> list[Output]:
        batches.append(len(messages))
        return [Output(topics.labels, m.key(), m.value()) for m in messages]

    group = f"{isolated_settings.topic_namespace}-marks"
    values = await _run_until_read(
        isolated_settings, group, topics.labels_raw, 20, copy, topics.labels, 600
    )
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(600))
    assert len(batches) >= 30  # batches of at most 20 messages
    read_partitions = [tp for starts in reads for tp in starts]
    # Each partition is read when first seen, never again while the assignment holds.
    assert len(read_partitions) == len(set(read_partitions)) <= isolated_settings.topic_partitions
    # The marks are still written per attempt: each partition's record ends where the
    # group's committed offset starts.
    consumer = Consumer(consumer_config(isolated_settings, group))
    try:
        committed = consumer.committed(
            [TopicPartition(t, p) for t, p in set(read_partitions)], timeout=10
        )
    finally:
        consumer.close()
    r = redis_client.async_client(isolated_settings.redis_dsn)
    record = CrashRecord(r, isolated_settings.redis_prefix, group, limit=3)
    try:
        for tp in committed:
            key = record._key(tp.topic, tp.partition)
            assert int(await r.hget(key, "until")) == tp.offset - 1
    finally:
        await r.aclose()
