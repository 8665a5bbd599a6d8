"""Running the gateway (and the workers behind it) for integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.gateway.auth import create_key
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.ports import free_port


def wait_http(url: str, timeout: float = 60, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode} before {url} answered")
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
    """Run the gateway on a free port; returns once /health is 200 (its live feed assigned)."""
    port = free_port()
    proc = start_service(
        "gateway", settings, logs / "gateway.log", CALIBER_GATEWAY_PORT=str(port), **extra
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", proc=proc)
    return base, proc


def insert_predictions(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Write predictions the way the recorder would (the gateway only reads them)."""

    async def go() -> None:
        conn = await asyncpg.connect(settings.postgres_url)
        try:
            await conn.executemany(
                "INSERT INTO predictions (event_id, tenant_id, model_name, model_version, "
                "model_version_id, event_time, predicted_label, confidence, "
                "calibrated_confidence, threshold, status, ground_truth, correct, decided_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, now())",
                [
                    (
                        uuid.UUID(r["event_id"]),
                        r["tenant"],
                        r["model_name"],
                        r["model_version"],
                        r["model_version_id"],
                        r["event_time"],
                        r.get("predicted_label", "yes"),
                        r.get("confidence", 0.5),
                        r.get("threshold", 0.6),
                        r.get("status", "review"),
                        r.get("ground_truth"),
                        None
                        if r.get("ground_truth") is None
                        else r["ground_truth"] == r.get("predicted_label", "yes"),
                    )
                    for r in rows
                ],
            )
        finally:
            await conn.close()

    asyncio.run(go())
