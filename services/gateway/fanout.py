"""Fan-out to ``/ws/live``: decisions, alerts and metric snapshots from Kafka, and reviews.

Each gateway instance reads ``<ns>.decisions``, ``<ns>.alerts`` and ``<ns>.metrics`` from
the latest offset in a consumer group of its own (every instance sees every event) and
hands each event, serialised once, to the queue of every interested client. A client's
queue is bounded: a client that falls that far behind is marked dropped (its handler then
closes it) and the others never wait for it. Events of one model version keep their order:
they come from one partition (the key is the model version) through one loop.

The queue bound (CALIBER_GATEWAY_WS_QUEUE) should exceed the events of one batch message
(CALIBER_BATCH_MAX_EVENTS), or an unfiltered client is dropped by a single batch.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message
from confluent_kafka.aio import AIOConsumer

from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings
from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config, gathering_fetch

logger = logging.getLogger(__name__)

LIVE_LINGER_SECONDS = 0.1
"""How long the live feed gathers decisions, alerts and snapshots before relaying them."""

Event = dict[str, Any]
IdOf = Callable[[str], "int | None"]


@dataclass(eq=False)
class Client:
    tenant: str
    model_version_id: int | None
    queue: asyncio.Queue[str]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, tenant: str, model_version_id: int | None) -> bool:
        return tenant == self.tenant and (
            self.model_version_id is None or model_version_id == self.model_version_id
        )


class Hub:
    """The connected clients and their bounded queues."""

    def __init__(self, queue_size: int, metrics: GatewayMetrics) -> None:
        self._clients: set[Client] = set()
        self._queue_size = queue_size
        self._metrics = metrics

    def join(self, tenant: str, model_version_id: int | None) -> Client:
        client = Client(tenant, model_version_id, asyncio.Queue(self._queue_size))
        self._clients.add(client)
        self._metrics.ws_clients.set(len(self._clients))
        return client

    def leave(self, client: Client) -> None:
        self._clients.discard(client)
        self._metrics.ws_clients.set(len(self._clients))

    def listening(self, tenant: str) -> bool:
        """Whether any client of ``tenant`` is connected (else events need not be built)."""
        return any(c.tenant == tenant for c in self._clients)

    def publish(self, tenant: str, model_version_id: int | None, events: list[Event]) -> None:
        """Queue ``events`` (in order) for every client that wants them."""
        targets = [
            c for c in self._clients if not c.dropped.is_set() and c.wants(tenant, model_version_id)
        ]
        if not targets:
            return
        # orjson: about a tenth of the gateway's time at 10,000 events/s went to the standard
        # library's encoder (the same compact JSON).
        texts = [orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS).decode() for e in events]
        for c in targets:
            for text in texts:
                try:
                    c.queue.put_nowait(text)
                except asyncio.QueueFull:
                    c.dropped.set()
                    self._metrics.ws_dropped.inc()
                    break


def decision_events(record: dict[str, Any], predictions: bool = False) -> Iterator[Event]:
    """The per-event messages of one DecisionBatch record.

    With ``predictions``, each ``decision`` message is followed by a copy of type
    ``prediction``: the original dashboard's live panel plots messages of that type by their
    ``confidence`` (raw, as the model sent it) and ``status``. An extra message rather than
    extra fields, because a message has one type and the console reads ``decision``.
    """
    p = record["predictions"]
    key = model_key(p["tenant"], p["model_name"], p["model_version"])
    for eid, label, conf, cal, status, t in zip(
        p["event_ids"],
        p["predicted_labels"],
        _plain(p["confidences"]),
        _plain(record["calibrated_confidences"]),
        record["statuses"],
        _plain(p["event_time_ms"]),
        strict=True,
    ):
        event: Event = {
            "type": "decision",
            "id": eid,
            "event_id": eid,
            "model": key,
            "model_version_id": p["model_version_id"],
            "predicted_label": label,
            "confidence": conf,
            "calibrated_confidence": cal,
            "status": status,
            "threshold": record["threshold"],
            "event_time_ms": t,
            "decided_at_ms": record["decided_at_ms"],
        }
        yield event
        if predictions:
            yield {**event, "type": "prediction"}


def _plain(values: Any) -> list[Any]:
    """Python numbers for JSON: a columnar decode gives numpy arrays."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def route(
    decoded: Decoded, id_of: IdOf, predictions: bool = False
) -> tuple[str, int | None, list[Event]] | None:
    """(tenant, model version id, events) of one decoded message; None for other types.

    ``predictions``: also a ``prediction`` message per decision (see :func:`decision_events`).
    """
    rec = decoded.record
    if decoded.name == "DecisionBatch":
        p = rec["predictions"]
        key = model_key(p["tenant"], p["model_name"], p["model_version"])
        model_id = p["model_version_id"] if p["model_version_id"] is not None else id_of(key)
        if p["model_version_id"] is None:
            p["model_version_id"] = model_id
        return p["tenant"], model_id, list(decision_events(rec, predictions))
    if decoded.name in ("Alert", "MetricSnapshot"):
        key = model_key(rec["tenant"], rec["model_name"], rec["model_version"])
        model_id = rec.get("model_version_id")
        if model_id is None:
            model_id = id_of(key)
        kind = "alert" if decoded.name == "Alert" else "metrics"
        return (
            rec["tenant"],
            model_id,
            [{"type": kind, **rec, "model": key, "model_version_id": model_id}],
        )
    return None


def _tenant_of(m: Message) -> str | None:
    key = m.key()
    if not key:
        return None
    return bytes(key).split(b"/", 1)[0].decode(errors="replace")


async def follow(
    settings: GatewaySettings,
    hub: Hub,
    codec: AvroCodec,
    id_of: IdOf,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> None:
    """Relay decisions, alerts and metric snapshots to the WebSocket clients until ``stop``."""
    topics = Topics.for_namespace(settings.topic_namespace)
    consumer = AIOConsumer(
        consumer_config(
            settings,
            f"{settings.topic_namespace}-gateway-live-{uuid.uuid4().hex[:12]}",
            **{
                "auto.offset.reset": "latest",
                "partition.assignment.strategy": "range",
                **gathering_fetch(settings, LIVE_LINGER_SECONDS),
            },
        ),
        max_workers=1,
    )

    async def on_assign(_: object, partitions: list[Any]) -> None:
        ready.set()

    await consumer.subscribe([topics.decisions, topics.alerts, topics.metrics], on_assign=on_assign)
    try:
        while not stop.is_set():
            for m in await consumer.consume(num_messages=500, timeout=LIVE_LINGER_SECONDS):
                if m.error() is not None:
                    logger.warning("live feed: %s", m.error())
                    continue
                tenant = _tenant_of(m)
                if tenant is None or not hub.listening(tenant):
                    continue  # nobody of that tenant is connected: skip decoding
                decoded = codec.decode(m.value(), columnar=True)
                if not isinstance(decoded, Decoded):
                    logger.warning(
                        "live feed: undecodable message at %s[%s]@%s: %s",
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        decoded.message,
                    )
                    continue
                routed = route(decoded, id_of, settings.gateway_live_prediction_messages)
                if routed is not None:
                    hub.publish(*routed)
                    # Let the clients' senders drain before the next message, so a queue
                    # holds at most about one message's events from a client that keeps up.
                    await asyncio.sleep(0)
    finally:
        await consumer.close()
