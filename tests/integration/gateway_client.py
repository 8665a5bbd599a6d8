"""Running the gateway (and the workers behind it) for integration tests."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import asyncpg
import httpx

from services.gateway.auth import create_key
from shared.settings import Settings
from tests.integration.conftest import start_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def make_keys(settings: Settings, wanted: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """name → (tenant, roles) to name → key."""

    async def go() -> dict[str, str]:
        pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            return {n: await create_key(pool, t, roles) for n, (t, roles) in wanted.items()}
        finally:
            await pool.close()

    return asyncio.run(go())


def start_gateway(settings: Settings, logs: Path, **extra: str) -> tuple[str, object]:
    port = free_port()
    proc = start_service(
        "gateway", settings, logs / "gateway.log", CALIBER_GATEWAY_PORT=str(port), **extra
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health")
    return base, proc
