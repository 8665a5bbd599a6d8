"""The edge's body limit and text checks, and the request metrics, on small ASGI apps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from services.gateway.edge import Edge
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware import RequestMetrics
from services.gateway.settings import GatewaySettings


def echo_app(limit: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    app.add_middleware(Edge, settings=GatewaySettings(gateway_max_body_bytes=limit))
    return app


async def post(app: FastAPI, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.post("/echo", content=content)


async def test_declared_length_over_the_limit_is_413_naming_it() -> None:
    r = await post(echo_app(1024), b"x" * 1025)
    assert r.status_code == 413
    assert "1024 bytes" in r.text and "CALIBER_GATEWAY_MAX_BODY_BYTES" in r.text


async def test_streamed_body_over_the_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 300

    r = await post(echo_app(1024), chunks())
    assert r.status_code == 413


async def test_body_at_the_limit_passes_whole() -> None:
    r = await post(echo_app(1024), b"z" * 1024)
    assert r.status_code == 200 and r.json() == {"received": 1024}


async def test_body_that_is_not_utf8_is_400_and_a_lone_surrogate_422() -> None:
    not_utf8 = await post(echo_app(1024), b'{"a": "\xff"}')
    assert not_utf8.status_code == 400 and not_utf8.json()["detail"][0]["type"] == "invalid_utf8"
    lone = await post(echo_app(1024), b'{"a": ["ok", "\\ud83d"]}')
    assert lone.status_code == 422
    assert lone.json()["detail"][0]["loc"] == ["body", "a", 1]
    pair = await post(echo_app(1024), b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}')
    assert pair.status_code == 200, pair.text


async def test_requests_are_counted_by_route_template() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.add_middleware(RequestMetrics, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/items/1")).status_code == 200
        assert (await c.get("/items/2")).status_code == 200
        assert (await c.get("/items/x")).status_code == 422
        assert (await c.get("/nowhere/3")).status_code == 404
    count = metrics.requests.labels
    assert count("/items/{item_id}", "GET", "200")._value.get() == 2
    assert count("/items/{item_id}", "GET", "422")._value.get() == 1
    assert count("unmatched", "GET", "404")._value.get() == 1
    assert metrics.latency.labels("/items/{item_id}")._sum.get() > 0
