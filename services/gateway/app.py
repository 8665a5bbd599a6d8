"""The gateway's ASGI app: pools, producers, routers, the outbox relay and the live feed.

``python -m services.gateway`` serves it with uvicorn on ``CALIBER_GATEWAY_HOST``:
``CALIBER_GATEWAY_PORT`` (127.0.0.1:8000); OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.gateway import calibration, errors
from services.gateway.auth import ANY, KeyStore, Principal, require
from services.gateway.edge import Edge
from services.gateway.fanout import Hub, follow
from services.gateway.logs import install_redaction, uvicorn_log_config
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware import RequestMetrics
from services.gateway.model_cache import ModelCache, RegistryIndex
from services.gateway.openapi_errors import document_errors
from services.gateway.outbox import Relay
from services.gateway.publish import Publisher
from services.gateway.ratelimit import TokenBuckets
from services.gateway.routes import (
    console,
    drift,
    health,
    keys,
    live,
    predictions,
    registry,
    reviews,
)
from services.gateway.settings import GatewaySettings
from shared.codec import AvroCodec
from shared.kafka import make_producer
from shared.observability import configure_logging
from shared.topics import Topics

logger = logging.getLogger(__name__)

ROUTERS = (predictions, reviews, registry, calibration, drift, keys, health, live)
RESTART_SECONDS = 2.0
PUBLISH_TIMEOUT_MS = 15_000
"""How long a request waits for Kafka before it fails with 503."""


async def _keep_running(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a background loop; when it fails, log and start it again until ``stop``."""
    while not stop.is_set():
        try:
            await run()
        except Exception:
            logger.exception("%s failed; restarting in %.0f s", name, RESTART_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_SECONDS)


def create_app(settings: GatewaySettings) -> FastAPI:
    registry_ = CollectorRegistry()
    metrics = GatewayMetrics(registry_)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.settings = settings
        state.metrics = metrics
        state.topics = Topics.for_namespace(settings.topic_namespace)
        state.codec = codec = AvroCodec()
        state.pool = pool = await asyncpg.create_pool(
            settings.postgres_url, min_size=2, max_size=settings.gateway_db_pool_size
        )
        state.redis = aioredis.Redis.from_url(settings.redis_dsn)
        state.publisher = Publisher(
            make_producer(settings, **{"message.timeout.ms": PUBLISH_TIMEOUT_MS})
        )
        view = RegistryIndex(settings, state.topics.model_updates, codec)
        state.models = ModelCache(pool, view)
        state.keys = KeyStore(pool, settings.gateway_key_cache_seconds)
        state.hub = Hub(settings.gateway_ws_queue, metrics)
        state.live_ready = asyncio.Event()
        relay_producer = make_producer(settings)
        relay = Relay(
            pool,
            settings.postgres_url,
            relay_producer,
            metrics,
            settings.outbox_poll_seconds,
            settings.outbox_batch_rows,
            settings.outbox_retention_hours,
        )
        stop = asyncio.Event()
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "registry view": lambda: view.run(stop),
            "outbox relay": lambda: relay.run(stop),
            "live feed": lambda: follow(
                settings, state.hub, codec, state.models.id_of, stop, state.live_ready
            ),
        }
        tasks = [asyncio.create_task(_keep_running(n, f, stop)) for n, f in loops.items()]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
            state.publisher.close()
            relay_producer.flush(10)
            await state.redis.aclose()
            await pool.close()

    app = FastAPI(
        title="Caliber",
        version="0.2.0",
        description="Calibration, selective prediction and drift of models in production. "
        "Every endpoint but /health and these docs needs an API key: header `X-API-Key` or "
        "`Authorization: Bearer` (the `?api_key=` query form is accepted on /ws/live only). "
        'Every error answer is JSON of one shape, `{"detail": ...}`, bounded in size.',
        lifespan=lifespan,
    )
    for module in ROUTERS:
        app.include_router(module.router)
    console.mount(app)
    errors.install(app)

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(aioredis.ConnectionError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        logger.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return errors.ErrorResponse(
            f"a dependency is unavailable ({type(exc).__name__}); try again shortly", 503
        )

    async def metrics_text(request: Request) -> Response:
        pool = getattr(request.app.state, "pool", None)
        if pool is not None:
            try:
                metrics.set_review_queue(await reviews.queue_depth(pool))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A scrape still answers; the depths keep their last values.
                logger.warning("review queue depth not refreshed: %s", exc)
        return Response(generate_latest(registry_), media_type=CONTENT_TYPE_LATEST)

    if settings.gateway_open_metrics:
        app.get("/metrics", include_in_schema=False)(metrics_text)
    else:

        @app.get("/metrics", include_in_schema=False)
        async def guarded_metrics(
            request: Request, _: Annotated[Principal, Depends(require(ANY))]
        ) -> Response:
            return await metrics_text(request)

    document_errors(app)
    app.state.event_rate = TokenBuckets(
        settings.gateway_rate_events_per_second,
        settings.gateway_rate_events_per_second * settings.gateway_rate_burst_seconds,
    )
    app.add_middleware(Edge, settings=settings)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts 401/413/429 too
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level)
    install_redaction()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(),
        access_log=settings.log_level.upper() == "DEBUG",
        ws_max_size=1 << 20,
    )
