"""Anonymous access and CORS of the gateway, without its servers."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from pydantic import ValidationError

from services.gateway.anonymous import (
    AnonymousExposed,
    anonymous_principal,
    check_exposure,
    is_loopback,
    origin_allowed,
)
from services.gateway.app import create_app
from services.gateway.auth import KeyStore
from services.gateway.settings import GatewaySettings

PAGE = "http://127.0.0.1:5173"


def client(**settings: object) -> httpx.AsyncClient:
    s = GatewaySettings(**settings)  # type: ignore[arg-type]
    app = create_app(s)
    # No lifespan and no pool: only requests that never reach PostgreSQL are sent.
    app.state.gateway = SimpleNamespace(  # type: ignore[assignment]
        keys=KeyStore(None, 5.0, anonymous_principal(s)),  # type: ignore[arg-type]
        settings=s,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gateway.example", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_by_default() -> None:
    s = GatewaySettings()
    assert s.gateway_anonymous is False and s.gateway_cors_origins == []
    assert anonymous_principal(s) is None
    check_exposure(GatewaySettings(gateway_host="0.0.0.0"))  # off: nothing to refuse


def test_refused_beyond_loopback_unless_forced(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(AnonymousExposed, match="CALIBER_GATEWAY_ANONYMOUS_FORCE"):
        create_app(GatewaySettings(gateway_anonymous=True, gateway_host="0.0.0.0"))
    with caplog.at_level("WARNING"):
        check_exposure(
            GatewaySettings(
                gateway_anonymous=True, gateway_host="0.0.0.0", gateway_anonymous_force=True
            )
        )
    assert "FORCED ON A NON-LOOPBACK ADDRESS (0.0.0.0)" in caplog.text
    assert "ANONYMOUS ACCESS IS ON" in caplog.text


def test_loud_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        check_exposure(
            GatewaySettings(
                gateway_anonymous=True,
                gateway_anonymous_tenant="lab",
                gateway_anonymous_roles=["viewer", "reviewer"],
            )
        )
    assert "ANONYMOUS ACCESS IS ON" in caplog.text and "'lab'" in caplog.text
    assert "reviewer, viewer" in caplog.text


def test_principal_is_the_chosen_tenant_and_roles() -> None:
    p = anonymous_principal(
        GatewaySettings(gateway_anonymous=True, gateway_anonymous_roles=["producer", "viewer"])
    )
    assert p is not None and p.anonymous and p.key_id is None
    assert (p.tenant, p.roles) == ("default", frozenset({"producer", "viewer"}))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gateway_anonymous_roles", ["owner"], "roles must be one or more of"),
        ("gateway_anonymous_roles", [], "roles must be one or more of"),
        ("gateway_anonymous_tenant", "a/b", "without '/'"),
        ("gateway_cors_origins", ["http://x.test/app"], "without a path"),
        ("gateway_cors_origins", ["x.test"], "scheme://host"),
    ],
)
def test_bad_settings_name_the_value(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "allowed", "ok"),
    [
        ({}, [], True),  # a script: no Origin
        ({"origin": PAGE, "host": "127.0.0.1:8000"}, [PAGE], True),
        ({"origin": "http://evil.test", "host": "127.0.0.1:8000"}, [PAGE], False),
        ({"origin": "http://127.0.0.1:8000", "host": "127.0.0.1:8000"}, [], True),  # own
        ({"origin": "http://evil.test", "host": "127.0.0.1:8000"}, ["*"], True),
        ({"origin": "http://localhost:8000", "host": "localhost:8000"}, [], True),  # own
        ({"origin": "http://[::1]:8000", "host": "[::1]:8000"}, [], True),  # own
        # DNS rebinding: another site's name resolved to the gateway; its page sends an
        # Origin equal to its Host, which is still not the gateway's own.
        ({"origin": "http://evil.test:8000", "host": "evil.test:8000"}, [], False),
        ({"origin": "http://[::1", "host": "[::1"}, [], False),
    ],
)
def test_origin_allowed(headers: dict[str, str], allowed: list[str], ok: bool) -> None:
    assert origin_allowed(headers, allowed) is ok


async def test_preflight_is_answered_for_an_allowed_origin_only() -> None:
    async with client(gateway_cors_origins=[PAGE]) as c:
        asked = {"origin": PAGE, "access-control-request-method": "GET"}
        r = await c.options("/api/models", headers=asked)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == PAGE
        other = {**asked, "origin": "http://evil.test"}
        r = await c.options("/api/models", headers=other)
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        # A refusal carries the CORS headers, so the page can read why.
        r = await c.get("/api/models", headers={"origin": PAGE})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == PAGE


async def test_no_cors_headers_by_default() -> None:
    async with client() as c:
        r = await c.get("/api/models", headers={"origin": PAGE})
        assert r.status_code == 401 and "access-control-allow-origin" not in r.headers


async def test_anonymous_roles_and_origins_are_enforced() -> None:
    async with client(gateway_anonymous=True, gateway_cors_origins=[PAGE]) as c:
        # viewer only: producing is 403 (the role check runs before the body is parsed)
        r = await c.post("/api/predictions", json={}, headers={"origin": PAGE})
        assert r.status_code == 403 and "needs one of" in r.json()["detail"]
        r = await c.get("/api/me", headers={"origin": "http://evil.test"})
        assert r.status_code == 403 and "CALIBER_GATEWAY_CORS_ORIGINS" in r.json()["detail"]
        rebound = {"origin": "http://evil.test:8000", "host": "evil.test:8000"}
        r = await c.get("/api/me", headers=rebound)
        assert r.status_code == 403 and "CALIBER_GATEWAY_CORS_ORIGINS" in r.json()["detail"]
        r = await c.get("/api/me", headers={"origin": PAGE})
        assert r.status_code == 200
        assert r.json() == {"tenant": "default", "roles": ["viewer"], "key_id": None}
