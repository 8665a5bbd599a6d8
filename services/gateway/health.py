"""``/health``: each dependency's state and latency; 503 when one is down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


async def _check(name: str, probe: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), 3.0)
        state = "ok"
        error = None
    except (TimeoutError, OSError, KafkaException, Exception) as exc:  # any failure is "down"
        state, error = "down", f"{type(exc).__name__}: {exc}"
    out = {
        "name": name,
        "status": state,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if error:
        out["error"] = error
    return out


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    loop = asyncio.get_running_loop()

    async def kafka() -> None:
        await loop.run_in_executor(None, lambda: state.publisher.producer.list_topics(timeout=2))

    async def redis() -> None:
        await state.redis.ping()

    async def postgres() -> None:
        await state.pool.fetchval("SELECT 1")

    checks = await asyncio.gather(
        _check("kafka", kafka), _check("redis", redis), _check("postgres", postgres)
    )
    ok = all(c["status"] == "ok" for c in checks)
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "dependencies": checks},
        status_code=200 if ok else 503,
    )
