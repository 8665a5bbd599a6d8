"""``/health``: each dependency's state and latency; 503 when one is down. No key needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.schemas import HealthOut
from services.gateway.state import state_of

router = APIRouter(tags=["health"])
PROBE_TIMEOUT_SECONDS = 3.0


async def check(name: str, probe: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run one probe; any failure or a timeout means the dependency is down."""
    started = time.perf_counter()
    error = None
    try:
        await asyncio.wait_for(probe(), PROBE_TIMEOUT_SECONDS)
    except Exception as exc:  # whatever a client library raises, the dependency is down
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    out: dict[str, Any] = {
        "name": name,
        "status": "down" if error else "ok",
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if error:
        out["error"] = error
    return out


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(request: Request) -> JSONResponse:
    """Kafka, Redis, PostgreSQL and the live feed's Kafka assignment, each with its latency."""
    state = state_of(request)
    loop = asyncio.get_running_loop()

    async def kafka() -> None:
        producer = state.publisher.producer
        await loop.run_in_executor(None, lambda: producer.list_topics(timeout=2))

    async def redis() -> None:
        await state.redis.ping()

    async def postgres() -> None:
        await state.pool.fetchval("SELECT 1")

    async def live_feed() -> None:
        if not state.live_ready.is_set():
            raise RuntimeError("the live feed has no Kafka partitions assigned yet")

    checks = await asyncio.gather(
        check("kafka", kafka),
        check("redis", redis),
        check("postgres", postgres),
        check("live-feed", live_feed),
    )
    ok = all(c["status"] == "ok" for c in checks)
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "dependencies": checks},
        status_code=200 if ok else 503,
    )
