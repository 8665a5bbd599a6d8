"""The exactly-once batch loop against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Message

from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, make_producer
from shared.runtime.pipeline import Output, Pipeline, PipelineConfig
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


async def test_every_message_passes_exactly_once(isolated_settings: Settings) -> None:
    topics = Topics.for_namespace(isolated_settings.topic_namespace)
    producer = make_producer(isolated_settings)
    for i in range(2_000):
        producer.produce(topics.inference_raw, f"m{i}".encode(), f"k{i % 7}".encode())
    assert producer.flush(30) == 0

    async def upper(messages: Sequence[Message]) -> list[Output]:
        return [Output(topics.predictions, m.key(), (m.value() or b"").upper()) for m in messages]

    pipeline = Pipeline(
        isolated_settings,
        PipelineConfig(
            group_id=f"{isolated_settings.topic_namespace}-copy",
            topics=[topics.inference_raw],
            transactional_id=f"{isolated_settings.topic_namespace}-copy.0",
            max_messages=300,
        ),
        upper,
    )
    task = asyncio.create_task(pipeline.run())
    values = await asyncio.to_thread(_read_all, isolated_settings, topics.predictions, 2_000)
    pipeline.stop()
    await asyncio.wait_for(task, 30)
    assert sorted(values) == sorted(f"M{i}".encode() for i in range(2_000))
