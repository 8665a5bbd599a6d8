"""/ws/live on the real stack: decisions from <ns>.decisions in order, slow clients dropped.

Decisions, alerts and snapshots are produced straight to their topics, as the policy and
the aggregator would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from shared.contracts.batches import DecisionColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.gateway_client import insert_predictions, make_keys, start_gateway

CODEC = AvroCodec()
WS_QUEUE = 1_000


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    models: dict[str, int]
    topics: Topics

    def ws_url(self, who: str, model_version_id: int | None = None) -> str:
        url = self.base.replace("http://", "ws://") + f"/ws/live?api_key={self.keys[who]}"
        return url + (f"&model_version_id={model_version_id}" if model_version_id else "")


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings,
        {
            "admin": ("acme", ["admin"]),
            "viewer": ("acme", ["viewer"]),
            "reviewer": ("acme", ["reviewer"]),
            "globex": ("globex", ["viewer"]),
        },
    )
    base, gateway = start_gateway(
        isolated_settings,
        tmp_path_factory.mktemp("gateway-live"),
        CALIBER_GATEWAY_WS_QUEUE=str(WS_QUEUE),
    )
    # WS_QUEUE is more than one batch message's events (500): a client that keeps up is
    # never dropped by a burst, one that stops reading is once the kernel buffers are full.
    models = {}
    with httpx.Client(base_url=base, headers={"X-API-Key": keys["admin"]}) as c:
        for v in ("v1", "v2"):
            models[v] = c.post("/api/models", json={"name": "live", "version": v}).json()["id"]
    yield Env(
        isolated_settings,
        base,
        keys,
        models,
        Topics.for_namespace(isolated_settings.topic_namespace),
    )
    gateway.terminate()  # type: ignore[attr-defined]
    gateway.wait(30)  # type: ignore[attr-defined]


def decision_batch(version: str, model_id: int, ids: list[str], t0: int) -> bytes:
    n = len(ids)
    conf = np.linspace(0.3, 0.99, n)
    preds = PredictionColumns(
        tenant="acme",
        model_name="live",
        model_version=version,
        model_version_id=model_id,
        event_ids=ids,
        event_time_ms=t0 + np.arange(n, dtype=np.int64),
        predicted_labels=["yes"] * n,
        confidences=conf,
    )
    decision = DecisionColumns(preds, conf, conf < 0.6, 0.6, "registry", "identity", t0)
    return CODEC.encode("DecisionBatch", decision.to_record())


async def collect(ws: ClientConnection, n: int, seconds: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(out) < n and time.monotonic() < deadline:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 1)))
        except TimeoutError:
            continue
    return out


def stalled_client(host: str, port: int, url: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads.

    A raw socket with a 4 KiB receive buffer, so nothing but the kernel buffers holds what
    the gateway sends it (a client library would keep reading into its own memory).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.connect((host, port))
    path = url.split(str(port), 1)[1]
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def close_code_of(sock: socket.socket, seconds: float) -> int | None:
    """Read the server's frames until its close frame; the close code (None: none came)."""
    sock.settimeout(seconds)
    buf = b""
    try:
        while True:
            while len(buf) >= 2:
                opcode, length, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
                if length == 126:
                    length, start = int.from_bytes(buf[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < start + length:
                    break
                if opcode == 0x8:
                    return int.from_bytes(buf[start : start + 2], "big")
                buf = buf[start + length :]
            chunk = sock.recv(1 << 20)
            if not chunk:
                return None
            buf += chunk
    except TimeoutError:
        return None
    finally:
        sock.close()


def test_decisions_arrive_in_order_and_a_slow_client_is_dropped(env: Env) -> None:
    v1, v2 = env.models["v1"], env.models["v2"]
    topic = env.topics.decisions
    sent_v1: list[str] = []
    producer = make_producer(env.settings)
    host, port = env.base.removeprefix("http://").split(":")

    async def scenario() -> tuple[list[dict[str, Any]], float, int | None, list[dict[str, Any]]]:
        slow = stalled_client(host, int(port), env.ws_url("viewer"))
        fast = await websockets.connect(env.ws_url("viewer", v1))
        stranger = await websockets.connect(env.ws_url("globex"))
        await asyncio.sleep(0.5)
        t0 = int(time.time() * 1000)
        for i in range(40):
            ids = [str(uuid.UUID(int=i * 25 + j + 1)) for j in range(25)]
            sent_v1.extend(ids)
            producer.produce(topic, decision_batch("v1", v1, ids, t0 + i * 25), b"acme/live/v1")
            flood = [str(uuid.uuid4()) for _ in range(500)]
            producer.produce(topic, decision_batch("v2", v2, flood, t0), b"acme/live/v2")
        assert producer.flush(30) == 0
        flushed = time.monotonic()
        got = await collect(fast, len(sent_v1), 60)
        lag = time.monotonic() - flushed
        code = await asyncio.to_thread(close_code_of, slow, 20)
        leaked = await collect(stranger, 1, 1)
        for ws in (fast, stranger):
            await ws.close()
        return got, lag, code, leaked

    got, lag, slow_code, leaked = asyncio.run(scenario())
    assert [e["event_id"] for e in got] == sent_v1, "every v1 decision, in order, nothing else"
    assert all(e["type"] == "decision" and e["model_version_id"] == v1 for e in got)
    assert [e["event_time_ms"] for e in got] == sorted(e["event_time_ms"] for e in got)
    first = got[0]
    assert first["model"] == "acme/live/v1" and first["status"] in ("auto", "review")
    assert first["status"] == ("review" if first["confidence"] < 0.6 else "auto")
    assert slow_code == 1008, "the client that never reads is closed with policy violation"
    assert lag < 15, f"the fast client waited {lag:.1f} s after the flood was produced"
    assert leaked == [], "another tenant's client sees nothing of acme"
    with httpx.Client(base_url=env.base, headers={"X-API-Key": env.keys["viewer"]}) as c:
        text = c.get("/metrics").text
    assert "caliber_gateway_ws_dropped_total 1.0" in text


def test_reviews_alerts_and_snapshots_are_pushed(env: Env) -> None:
    v1 = env.models["v1"]
    eid = str(uuid.uuid4())
    insert_predictions(
        env.settings,
        [
            {
                "event_id": eid,
                "tenant": "acme",
                "model_name": "live",
                "model_version": "v1",
                "model_version_id": v1,
                "event_time": datetime(2026, 11, 3, tzinfo=UTC),
            }
        ],
    )
    alert = {
        "alert_id": str(uuid.uuid4()),
        "tenant": "acme",
        "kind": "calibration",
        "severity": "warning",
        "model_name": "live",
        "model_version": "v1",
        "metric": "ece",
        "value": 0.12,
        "threshold": 0.1,
        "window": "1h",
        "created_at_ms": int(time.time() * 1000),
    }
    snapshot = {
        "tenant": "acme",
        "model_name": "live",
        "model_version": "v1",
        "window": "5m",
        "window_start_ms": 0,
        "window_end_ms": 300_000,
        "computed_at_ms": 300_000,
        "n_predictions": 4,
        "n_labeled": 2,
        "ece": 0.25,
    }

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(env.ws_url("viewer", v1)) as ws:
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(
                base_url=env.base, headers={"X-API-Key": env.keys["reviewer"]}
            ) as c:
                r = await c.post(f"/api/review/{eid}", json={"ground_truth": "no"})
                assert r.status_code == 200, r.text
            producer = make_producer(env.settings)
            producer.produce(env.topics.alerts, CODEC.encode("Alert", alert), b"acme/live/v1")
            producer.produce(
                env.topics.metrics, CODEC.encode("MetricSnapshot", snapshot), b"acme/live/v1"
            )
            assert producer.flush(30) == 0
            return await collect(ws, 3, 30)

    by_type = {e["type"]: e for e in asyncio.run(scenario())}
    assert set(by_type) == {"review", "alert", "metrics"}
    review = by_type["review"]
    assert (review["event_id"], review["ground_truth"], review["correct"]) == (eid, "no", False)
    assert review["model_version_id"] == v1
    assert by_type["alert"]["alert_id"] == alert["alert_id"]
    assert by_type["alert"]["model_version_id"] == v1, "filled from the registry"
    assert by_type["metrics"]["ece"] == 0.25 and by_type["metrics"]["model_version_id"] == v1
