"""The assembled app, without its servers: which routes need a key, the open metrics."""

from __future__ import annotations

import re
from types import SimpleNamespace

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.auth import KeyStore
from services.gateway.settings import GatewaySettings

OPEN = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def app_without_servers(**settings: object) -> httpx.AsyncClient:
    app = create_app(GatewaySettings(**settings))  # type: ignore[arg-type]
    # No lifespan: a request without a key never reaches PostgreSQL.
    app.state.gateway = SimpleNamespace(keys=KeyStore(None, 5.0))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_every_route_but_health_and_docs_needs_a_key() -> None:
    app = create_app(GatewaySettings())
    documented = [
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    ]
    assert len(documented) >= 15
    checked = 0
    async with app_without_servers() as client:
        for method, path in [*documented, ("GET", "/metrics")]:
            if path in OPEN:
                continue
            r = await client.request(method, re.sub(r"\{[^}]+\}", "1", path))
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            checked += 1
        assert (await client.get("/docs")).status_code == 200
    assert checked == len(documented)  # everything documented but /health, plus /metrics


@pytest.mark.parametrize(("open_metrics", "status"), [(False, 401), (True, 200)])
async def test_metrics_are_guarded_unless_opened(open_metrics: bool, status: int) -> None:
    async with app_without_servers(gateway_open_metrics=open_metrics) as client:
        r = await client.get("/metrics")
    assert r.status_code == status
    if status == 200:
        assert "caliber_gateway_requests_total" in r.text


async def test_oversized_body_is_refused_before_anything_else() -> None:
    async with app_without_servers(gateway_max_body_bytes=2048) as client:
        r = await client.post("/api/predictions/batch", content=b"{" + b" " * 4096 + b"}")
    assert r.status_code == 413 and "2048 bytes" in r.text
