"""``WS /ws/live``: decisions, review resolutions, alerts and metric snapshots as they happen.

Authenticated by ``X-API-Key`` or ``Authorization: Bearer`` like the REST API or, here only
(browsers cannot set a WebSocket's headers), ``?api_key=``, which the gateway's log lines
redact; any reading role. ``?model_version_id=`` keeps one model version's events. Each message
is one JSON object with a ``type``: ``decision``, ``review``, ``alert`` or ``metrics``; with
``CALIBER_GATEWAY_LIVE_PREDICTION_MESSAGES`` each decision is followed by the same fields as a
message of type ``prediction`` (what the original dashboard's live panel plots: ``confidence``,
``status``). In anonymous mode a connection without a key is the anonymous principal, when
its ``Origin`` is the gateway's own or an allowed one.
A client that falls ``CALIBER_GATEWAY_WS_QUEUE`` events behind is closed with code 1008.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from services.gateway.anonymous import origin_allowed
from services.gateway.auth import READ, websocket_principal
from services.gateway.fanout import Client, Hub
from services.gateway.state import state_of

router = APIRouter(tags=["live"])
POLICY_VIOLATION = 1008
CLOSE_TIMEOUT_SECONDS = 10.0
"""As long as uvicorn waits for a closing handshake."""


async def _pump(ws: WebSocket, client: Client) -> None:
    while True:
        await ws.send_text(await client.queue.get())


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/ws/live")
async def live(ws: WebSocket, model_version_id: int | None = None) -> None:
    principal = await websocket_principal(ws, READ)
    if principal is not None and principal.anonymous:
        allowed = state_of(ws).settings.gateway_cors_origins
        if not origin_allowed(ws.headers, allowed):
            principal = None
    if principal is None:
        await ws.close(code=POLICY_VIOLATION, reason="a valid API key with a read role is required")
        return
    await ws.accept()
    hub: Hub = state_of(ws).hub
    client = hub.join(principal.tenant, model_version_id)
    tasks = [
        asyncio.create_task(_pump(ws, client)),
        asyncio.create_task(_drain(ws)),
        asyncio.create_task(client.dropped.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.leave(client)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    if client.dropped.is_set():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                ws.close(code=POLICY_VIOLATION, reason="too slow: fell too far behind the feed"),
                CLOSE_TIMEOUT_SECONDS,
            )
