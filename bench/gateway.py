"""REST throughput of the gateway: ``POST /api/predictions`` single and batch forms.

``python -m bench.gateway`` starts one gateway process on a fresh namespace and
drives it from this process with concurrent HTTP/1.1 clients for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import numpy as np
import typer

from services.gateway.auth import create_key
from shared.settings import Settings
from tooling.benchmarking import bench_settings, cpu_seconds, peak_rss_mb, start_service

app = typer.Typer(add_completion=False)


async def _drive(
    base: str, key: str, body: dict[str, Any], path: str, seconds: float, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    content = json.dumps(body).encode()  # encoded once: the generator shares the cores
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=30
    ) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                r = await client.post(path, content=content)
                if r.status_code != 202:
                    raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _setup(settings: Settings, base: str) -> tuple[str, int]:
    import asyncpg

    pool = await asyncpg.create_pool(settings.postgres_url, min_size=1, max_size=1)
    assert pool is not None
    key = await create_key(pool, "bench", ["admin"])
    await pool.close()
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}) as c:
        r = await c.post(
            "/api/models",
            json={"name": f"bench-{uuid.uuid4().hex[:8]}", "version": "v1"},
        )
        r.raise_for_status()
        return key, int(r.json()["id"])


@app.command()
def main(
    seconds: float = 10, concurrency: int = 16, batch_size: int = 500, port: int = 8099
) -> None:
    """Print requests/s, events/s, latency p50/p99 and the gateway's memory."""
    from shared.db import migrate

    settings = bench_settings()
    migrate(settings.postgres_url)
    base = f"http://127.0.0.1:{port}"
    proc = start_service(
        "gateway",
        settings,
        Settings().logs_dir / "gateway-bench.log",
        CALIBER_GATEWAY_PORT=str(port),
        CALIBER_LOG_LEVEL="WARNING",
    )
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        key, model_id = asyncio.run(_setup(settings, base))
        event = {
            "model_version_id": model_id,
            "confidence": 0.8,
            "predicted_label": "yes",
            "features": {"a": 1.0, "b": 2.0, "c": "x"},
        }
        print(f"{'form':<7} {'requests/s':>11} {'events/s':>10} {'p50':>8} {'p99':>8}")
        for form, path, body, per in (
            ("single", "/api/predictions", event, 1),
            ("batch", "/api/predictions/batch", {"events": [event] * batch_size}, batch_size),
        ):
            cpu0 = cpu_seconds(proc.pid)
            lat = asyncio.run(_drive(base, key, body, path, seconds, concurrency))
            rps = len(lat) / seconds
            p50, p99 = np.percentile(lat, [50, 99])
            cpu = cpu_seconds(proc.pid) - cpu0
            print(
                f"{form:<7} {rps:>11,.0f} {rps * per:>10,.0f} {p50:>6.1f}ms {p99:>6.1f}ms"
                f"  cpu {cpu:.1f}s"
            )
        print(
            f"gateway peak RSS {peak_rss_mb(proc.pid):.0f} MB (load generator on the same 2 cores)"
        )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    app()
