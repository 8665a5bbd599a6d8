"""Publishing Alert records to caliber.alerts and waiting until Kafka has them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from shared.contracts.codec import AvroCodec


async def publish_alerts(
    producer: Producer, topic: str, codec: AvroCodec, alerts: Sequence[dict[str, Any]]
) -> None:
    """Produce ``alerts`` (keyed by their model version) and flush whatever else the producer
    holds (snapshots, say); raise ConnectionError unless Kafka acknowledged every message,
    so the caller saves no alert state for an alert that was never delivered."""
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _: Message) -> None:
        if err is not None:
            failed.append(err)

    for a in alerts:
        key = f"{a['tenant']}/{a['model_name']}/{a['model_version']}".encode()
        producer.produce(topic, codec.encode("Alert", a), key, on_delivery=delivered)
    remaining = await asyncio.get_running_loop().run_in_executor(None, producer.flush, 30.0)
    if remaining:
        raise ConnectionError(f"{remaining} messages not acknowledged by Kafka")
    if failed:
        raise ConnectionError(f"Kafka refused {len(failed)} alerts: {failed[0]}")
