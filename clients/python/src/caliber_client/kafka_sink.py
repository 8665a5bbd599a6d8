"""The Kafka sink: batches as ``PredictionBatch`` / ``LabelBatch`` messages.

Idempotent producer with ``acks=all``: a broker retry never writes a message twice, and a
message counts as delivered only once every in-sync replica has it. Keys are the model
version (``tenant/model/version``) so one version's events stay ordered in one partition;
labels of unnamed models are keyed by the tenant.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from caliber_client.batcher import Item
from caliber_client.codec import Encoder
from caliber_client.events import Event, LabelEvent, label_batch, prediction_batch

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.max.bytes": 1_000_000,  # the broker's default limit: a refusal comes back at once
}


def kafka_reachable(
    bootstrap: str, timeout: float, config: Mapping[str, Any] | None = None
) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within ``timeout``."""
    producer = Producer({"bootstrap.servers": bootstrap, **(config or {})})
    try:
        producer.list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


class KafkaSink:
    def __init__(
        self,
        bootstrap: str,
        tenant: str,
        topic_namespace: str = "caliber",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **(config or {})}
        )
        self._tenant = tenant
        self._inference = f"{topic_namespace}.inference.raw"
        self._labels = f"{topic_namespace}.labels.raw"
        self._encoder = Encoder()
        self._inflight: dict[int, list[str]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def _message(self, items: Sequence[Item]) -> tuple[str, bytes, bytes]:
        first = items[0]
        if isinstance(first, Event):
            events = [i for i in items if isinstance(i, Event)]
            record = prediction_batch(self._tenant, events)
            key = f"{self._tenant}/{first.model_name}/{first.model_version}"
            return self._inference, key.encode(), self._encoder.encode("PredictionBatch", record)
        labels = [i for i in items if isinstance(i, LabelEvent)]
        record = label_batch(self._tenant, labels)
        key = self._tenant
        if record["model_name"] is not None:
            key = f"{self._tenant}/{record['model_name']}/{record['model_version']}"
        return self._labels, key.encode(), self._encoder.encode("LabelBatch", record)

    def deliver(self, items: Sequence[Item], failed: Callable[[list[str], str], None]) -> None:
        ids = [i.event_id for i in items]
        try:
            topic, key, value = self._message(items)
        except Exception as exc:  # a record its schema refuses: those events fail, not all
            failed(ids, f"cannot encode: {exc}")
            return
        token = next(self._ids)
        with self._lock:
            self._inflight[token] = ids

        def done(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                self._inflight.pop(token, None)
            if err is not None:
                failed(ids, f"Kafka: {err.str()}")

        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=done)
                return
            except BufferError:  # the local queue is full: serve callbacks, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:
                with self._lock:
                    self._inflight.pop(token, None)
                failed(ids, f"Kafka refused the message: {exc}")
                return

    def service(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def drain(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = self._producer.flush(max(deadline - time.monotonic(), 0))
            if left == 0 or time.monotonic() >= deadline:
                break
        with self._lock:
            if left == 0:
                return []
            pending = [i for ids in self._inflight.values() for i in ids]
            self._inflight.clear()
            return pending

    def close(self) -> None:
        self._producer.flush(5)
