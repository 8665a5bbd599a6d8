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


async def test_the_key_is_checked_before_the_body_is_read() -> None:
    async with app_without_servers(gateway_max_body_bytes=2048) as client:
        r = await client.post("/api/predictions/batch", content=b"{" + b" " * 4096 + b"}")
        assert r.status_code == 401 and r.json()["detail"].startswith("a valid API key")
        # On a route that needs no key, the same body meets the limit.
        r = await client.post("/health", content=b"{" + b" " * 4096 + b"}")
    assert r.status_code == 413 and "2048 bytes" in r.text


async def test_a_key_in_the_query_string_is_not_accepted_on_rest() -> None:
    async with app_without_servers() as client:
        r = await client.get("/api/me", params={"api_key": "clb_anything"})
    assert r.status_code == 401


def test_every_operation_documents_its_errors_with_one_shape() -> None:
    spec = create_app(GatewaySettings()).openapi()
    ops = {
        (m.upper(), p): op
        for p, methods in spec["paths"].items()
        for m, op in methods.items()
        if p != "/health"
    }
    for (method, path), op in ops.items():
        codes = set(op["responses"])
        assert {"401", "403", "429", "503"} <= codes, (method, path, codes)
        if "requestBody" in op:
            assert {"400", "413", "422"} <= codes, (method, path, codes)
        if "{" in path:
            assert "404" in codes, (method, path, codes)
        for code, answer in op["responses"].items():
            if int(code) >= 400:
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorOut", (method, path, code)
        assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "404" in ops[("GET", "/api/calibration")]["responses"]
    assert "404" not in ops[("GET", "/api/predictions")]["responses"]
    assert "409" in ops[("POST", "/api/models")]["responses"]
