"""``/ws/live``: decisions, review resolutions and alerts as they happen.

Each client has a bounded queue; a client that falls that far behind is closed (code 1008)
rather than slowing the fan-out for everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.aio import AIOConsumer
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from services.gateway.auth import READ, websocket_principal
from services.gateway.metrics import GatewayMetrics
from shared.codec import AvroCodec, Decoded
from shared.settings import Settings
from shared.topics import Topics

logger = logging.getLogger(__name__)
router = APIRouter()
POLICY_VIOLATION = 1008


@dataclass(eq=False)
class Client:
    tenant: str
    model_version_id: int | None
    queue: asyncio.Queue[dict[str, Any]]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
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

    def publish(self, tenant: str, model_version_id: int | None, event: dict[str, Any]) -> None:
        for c in list(self._clients):
            if c.tenant != tenant or c.dropped.is_set():
                continue
            if c.model_version_id is not None and model_version_id != c.model_version_id:
                continue
            try:
                c.queue.put_nowait(event)
            except asyncio.QueueFull:
                c.dropped.set()
                self._metrics.ws_dropped.inc()


@router.websocket("/ws/live")
async def live(ws: WebSocket, model_version_id: int | None = None) -> None:
    principal = await websocket_principal(ws, READ)
    if principal is None:
        await ws.close(code=POLICY_VIOLATION, reason="a valid API key with a read role is required")
        return
    await ws.accept()
    hub: Hub = ws.app.state.hub
    client = hub.join(principal.tenant, model_version_id)

    async def pump() -> None:
        while True:
            await ws.send_json(await client.queue.get())

    sender = asyncio.create_task(pump())
    receiver = asyncio.create_task(ws.receive_text())
    dropped = asyncio.create_task(client.dropped.wait())
    try:
        await asyncio.wait({sender, receiver, dropped}, return_when=asyncio.FIRST_COMPLETED)
        if dropped.done():
            await ws.close(code=POLICY_VIOLATION, reason="client too slow: fell too far behind")
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(client)
        for task in (sender, receiver, dropped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task


def decision_events(record: dict[str, Any]) -> tuple[str, int | None, list[dict[str, Any]]]:
    p = record["predictions"]
    key = f"{p['tenant']}/{p['model_name']}/{p['model_version']}"
    events = [
        {
            "type": "decision",
            "event_id": eid,
            "model": key,
            "model_version_id": p["model_version_id"],
            "predicted_label": label,
            "confidence": conf,
            "calibrated_confidence": cal,
            "status": status,
            "threshold": record["threshold"],
            "event_time_ms": t,
        }
        for eid, label, conf, cal, status, t in zip(
            p["event_ids"],
            p["predicted_labels"],
            p["confidences"],
            record["calibrated_confidences"],
            record["statuses"],
            p["event_time_ms"],
            strict=True,
        )
    ]
    return p["tenant"], p["model_version_id"], events


async def fan_out(
    settings: Settings, hub: Hub, codec: AvroCodec, stop: asyncio.Event, ready: asyncio.Event
) -> None:
    """Relay decisions, alerts and metric snapshots from Kafka to the WebSocket clients."""
    topics = Topics.for_namespace(settings.topic_namespace)
    consumer = AIOConsumer(
        {
            "bootstrap.servers": settings.kafka_servers,
            # Every gateway instance sees every event: its own group, from the latest offset.
            "group.id": f"{settings.topic_namespace}-gateway-live-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
        max_workers=1,
    )

    async def on_assign(_: object, partitions: list[Any]) -> None:
        ready.set()

    await consumer.subscribe([topics.decisions, topics.alerts, topics.metrics], on_assign=on_assign)
    try:
        while not stop.is_set():
            for m in await consumer.consume(num_messages=500, timeout=0.1):
                if m.error() is not None:
                    continue
                decoded = codec.decode(m.value())
                if not isinstance(decoded, Decoded):
                    continue
                if decoded.name == "DecisionBatch":
                    tenant, model_id, events = decision_events(decoded.record)
                    for ev in events:
                        hub.publish(tenant, model_id, ev)
                elif decoded.name == "Alert":
                    rec = decoded.record
                    hub.publish(rec["tenant"], rec["model_version_id"], {"type": "alert", **rec})
                elif decoded.name == "MetricSnapshot":
                    rec = decoded.record
                    hub.publish(rec["tenant"], None, {"type": "metrics", **rec})
    finally:
        await consumer.close()
