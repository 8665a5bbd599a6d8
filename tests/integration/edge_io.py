"""Events and readers shared by the bad-input tests (edge strings, fuzz, quarantine)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.contracts.codec import AvroCodec
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.kafka_io import TopicReader

CODEC = AvroCodec()
KEY = b"acme/fraud/v1"


def inference_event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "tenant": "acme",
        "model_name": "fraud",
        "model_version": "v1",
        "model_version_id": None,
        "event_time_ms": int(time.time() * 1000),
        "predicted_label": "yes",
        "confidence": 0.8,
        "probabilities": {"yes": 0.8, "no": 0.2},
        "logits": None,
        "features": {"amount": 12.5, "country": "fr"},
        "ground_truth": None,
        "uncertainty": None,
        "metadata": {},
    }
    base.update(changes)
    return base


def produce_raw(settings: Settings, topic: str, values: list[bytes], key: bytes = KEY) -> None:
    """Send ``values`` in order, one message each, all with one key (one partition)."""
    producer = make_producer(settings)
    for v in values:
        producer.produce(topic, v, key)
    assert producer.flush(15) == 0


def event_ids_on(reader: TopicReader, topic: str) -> list[str]:
    """Every event id of the batch records read from ``topic`` (decision batches too)."""
    out: list[str] = []
    for d in reader.records[topic]:
        rec = d.record.get("predictions", d.record)
        out.extend(rec["event_ids"])
    return out


def dead_letters(reader: TopicReader, topic: str) -> list[dict[str, Any]]:
    return [d.record for d in reader.records[topic]]
