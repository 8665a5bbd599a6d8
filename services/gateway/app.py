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
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.gateway import errors
from services.gateway.anonymous import AnonymousExposed, check_exposure
from services.gateway.auth import ANY, Principal, require
from services.gateway.edge import Edge
from services.gateway.fanout import follow
from services.gateway.logs import install_redaction, uvicorn_log_config
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware import RequestMetrics
from services.gateway.openapi_errors import document_errors
from services.gateway.outbox import Relay
from services.gateway.rollouts import follow_transitions
from services.gateway.routes import (
    calibrate,
    calibration,
    console,
    drift,
    estimation,
    health,
    keys,
    labels,
    live,
    predictions,
    recalibration,
    registry,
    reviews,
    rollout,
    routing,
    segments,
)
from services.gateway.settings import GatewaySettings
from services.gateway.state import open_state
from shared.runtime.identity import refuse_mixed_stores
from shared.runtime.kafka import make_producer
from shared.runtime.observability import configure_logging

logger = logging.getLogger(__name__)

ROUTERS = (
    predictions,
    labels,
    reviews,
    registry,
    estimation,
    recalibration,
    segments,
    rollout,
    calibrate,
    routing,
    calibration,
    drift,
    keys,
    health,
    live,
)
RESTART_SECONDS = 2.0


def api_version() -> str:
    """The API's version: the installed ``caliber`` package's."""
    try:
        return version("caliber")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


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
    """The app; raises :class:`AnonymousExposed` for anonymous access beyond loopback."""
    check_exposure(settings)
    registry_ = CollectorRegistry()
    metrics = GatewayMetrics(registry_)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = state = await open_state(settings, metrics)
        pool, codec, view = state.pool, state.codec, state.view
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
            "segment maps": lambda: state.segment_maps.run(stop),
            "outbox relay": lambda: relay.run(stop),
            "rollout transitions": lambda: follow_transitions(
                pool,
                codec,
                state.topics.model_updates,
                settings.outbox_poll_seconds,
                stop,
                state.models.forget,
            ),
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
            await state.route_redis.aclose()
            await pool.close()

    app = FastAPI(
        title="Caliber",
        version=api_version(),
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
        # No pool before start-up (or in a test app without servers): the depths wait.
        pool = getattr(getattr(request.app.state, "gateway", None), "pool", None)
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
    app.add_middleware(Edge, settings=settings)
    if settings.gateway_cors_origins:
        # Outside the edge: preflights are answered before any key check, and refusals
        # (401, 403, 413, 429) carry the CORS headers, so a page can read why.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.gateway_cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts 401/413/429 too
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level)
    refuse_mixed_stores(settings, "gateway")
    install_redaction()
    try:
        app = create_app(settings)
    except AnonymousExposed as exc:
        logger.error("refusing to start: %s", exc)
        raise SystemExit(2) from exc
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(),
        access_log=settings.log_level.upper() == "DEBUG",
        ws_max_size=1 << 20,
    )
