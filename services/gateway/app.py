"""The gateway's ASGI app: wiring of pools, producer, routers, relay and fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import calibration, health, live, predictions, registry, reviews
from services.gateway.live import Hub, fan_out
from services.gateway.metrics import GatewayMetrics
from services.gateway.model_cache import ModelCache
from services.gateway.outbox import backlog, relay
from services.gateway.publish import Publisher
from services.gateway.settings import GatewaySettings
from shared.codec import AvroCodec
from shared.kafka import make_producer
from shared.observability import configure_logging
from shared.topics import Topics


class BodyLimit:
    """Rejects request bodies above ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"request body larger than {self.limit} bytes "
                        "(CALIBER_GATEWAY_MAX_BODY_BYTES)",
                        "type": "too_large",
                    }
                ]
            },
            status_code=413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: GatewaySettings) -> FastAPI:
    registry_ = CollectorRegistry()
    metrics = GatewayMetrics(registry_)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.settings = settings
        state.topics = Topics.for_namespace(settings.topic_namespace)
        state.codec = AvroCodec()
        state.pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=10)
        state.redis = aioredis.Redis.from_url(settings.redis_dsn)
        state.publisher = Publisher(make_producer(settings))
        state.models = ModelCache(state.pool)
        state.hub = Hub(settings.gateway_ws_queue, metrics)
        state.metrics = metrics
        state.live_ready = asyncio.Event()
        stop = asyncio.Event()
        relay_producer = make_producer(settings)
        tasks = [
            asyncio.create_task(
                relay(state.pool, relay_producer, settings.outbox_poll_seconds, stop)
            ),
            asyncio.create_task(fan_out(settings, state.hub, state.codec, stop, state.live_ready)),
        ]
        metrics.outbox_backlog.set_function(lambda: state.outbox_backlog)
        state.outbox_backlog = 0
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 10)
            state.publisher.close()
            relay_producer.flush(10)
            await state.redis.aclose()
            await state.pool.close()

    app = FastAPI(
        title="Caliber",
        version="0.1.0",
        description="Calibration, selective prediction and drift for models in production.",
        lifespan=lifespan,
    )
    for module in (predictions, reviews, registry, calibration, health, live):
        app.include_router(module.router)

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(template, request.method, str(response.status_code)).inc()
        metrics.latency.labels(template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        request.app.state.outbox_backlog = await backlog(request.app.state.pool)
        return Response(generate_latest(registry_), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=settings.gateway_max_body_bytes)
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        ws_max_size=1 << 20,
    )
