"""The original Caliber dashboard's calls, from a page of another origin, in headless Chromium.

A page served by a second local HTTP server (its own origin) calls the gateway as the
original React dashboard does: without a key and cross-origin, `/api/models`,
`/api/calibration`, `/api/risk-coverage`, `/api/review-queue`, `POST /api/review/{id}`,
`/api/drift-alerts` and `/ws/live` (where it waits for a message of type `prediction`), and
`POST /api/predictions` as its scripts do. With anonymous mode off the same page is refused
(401, readable through CORS); a page of an origin not allowed is blocked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from shared.settings import Settings
from tests.integration.browser import headless_chromium, page_server
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.polling import poll

TENANT = "lab"
FETCH = """
const [url, init, done] = arguments;
fetch(url, init || {})
  .then(r => r.text().then(t => done({status: r.status, body: t})))
  .catch(e => done({error: String(e)}));
"""
LIVE = """
const [wsUrl, postUrl, body, done] = arguments;
const seen = [];
let finished = false;
const end = (v) => { if (!finished) { finished = true; done(v); } };
const ws = new WebSocket(wsUrl);
ws.onmessage = (m) => {
  const d = JSON.parse(m.data);
  seen.push(d);
  if (d.type === 'prediction') { ws.close(); end({messages: seen}); }
};
ws.onopen = () => fetch(postUrl, {
  method: 'POST', headers: {'Content-Type': 'application/json'}, body: body,
}).then(r => r.json().then(j => seen.push({posted: r.status, answer: j})));
ws.onclose = (e) => end({closed: e.code, messages: seen});
setTimeout(() => end({timeout: true, messages: seen}), 60000);
"""


@dataclass
class Env:
    open_base: str
    """Gateway with anonymous access on, allowing the page's origin."""
    closed_base: str
    """Gateway with anonymous access off, allowing the page's origin too."""
    page: str
    other_page: str
    model_id: int
    logs: Path


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("original")
    site = tmp_path_factory.mktemp("site")
    (site / "index.html").write_text("<!doctype html><title>original dashboard</title>")
    admin = make_keys(isolated_settings, {"admin": (TENANT, ["admin"])})["admin"]
    procs: list[Any] = []
    with page_server(site) as page, page_server(site) as other_page:
        try:
            open_base, gw = start_gateway(
                isolated_settings,
                logs / "open",
                CALIBER_GATEWAY_ANONYMOUS="true",
                CALIBER_GATEWAY_ANONYMOUS_TENANT=TENANT,
                CALIBER_GATEWAY_ANONYMOUS_ROLES='["producer", "reviewer", "viewer"]',
                CALIBER_GATEWAY_CORS_ORIGINS=json.dumps([page]),
                CALIBER_GATEWAY_LIVE_PREDICTION_MESSAGES="true",
            )
            procs.append(gw)
            closed_base, gw = start_gateway(
                isolated_settings, logs / "closed", CALIBER_GATEWAY_CORS_ORIGINS=json.dumps([page])
            )
            procs.append(gw)
            r = httpx.post(
                open_base + "/api/models",
                headers={"X-API-Key": admin},
                json={"name": "digits", "version": "v1", "stage": "production",
                      "abstain_threshold": 0.7},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            model_id = r.json()["id"]
            with psycopg.connect(isolated_settings.postgres_url) as conn:
                poll(
                    lambda: conn.execute(
                        "SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"
                    ).fetchone()[0],  # type: ignore[index]
                    30,
                    "the outbox to be published",
                )
            for name in ("ingest", "policy", "recorder"):
                procs.append(start_service(name, isolated_settings, logs / f"{name}.log"))
            yield Env(open_base, closed_base, page, other_page, model_id, logs)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        driver.set_script_timeout(90)
        yield driver


def _fetch(
    driver: WebDriver, origin: str, url: str, init: dict[str, Any] | None = None
) -> dict[str, Any]:
    if driver.current_url.rstrip("/") != origin:
        driver.get(origin + "/")
    result: dict[str, Any] = driver.execute_async_script(FETCH, url, init)
    return result


def test_the_page_reads_models_through_cors_in_anonymous_mode(env: Env, browser: WebDriver) -> None:
    r = _fetch(browser, env.page, env.open_base + "/api/models")
    assert r.get("status") == 200, r
    assert [(m["id"], m["name"]) for m in json.loads(r["body"])] == [(env.model_id, "digits")]


def test_the_page_is_refused_with_anonymous_mode_off(env: Env, browser: WebDriver) -> None:
    r = _fetch(browser, env.page, env.closed_base + "/api/models")
    assert r.get("status") == 401, r  # readable: the origin is allowed, the key is missing
    assert "API key" in json.loads(r["body"])["detail"]


def test_a_page_of_another_origin_is_blocked(env: Env, browser: WebDriver) -> None:
    r = _fetch(browser, env.other_page, env.open_base + "/api/models")
    assert "error" in r and "status" not in r, r  # the browser blocks the read
    # and the gateway refuses anonymous access to that origin whatever the browser does
    direct = httpx.get(env.open_base + "/api/models", headers={"Origin": env.other_page})
    assert direct.status_code == 403


def test_the_original_dashboard_flow(env: Env, browser: WebDriver) -> None:
    browser.get(env.page + "/")
    ws_url = env.open_base.replace("http://", "ws://") + "/ws/live"
    event = {"model_version_id": env.model_id, "predicted_label": "3", "confidence": 0.55}
    live: dict[str, Any] = browser.execute_async_script(
        LIVE, ws_url, env.open_base + "/api/predictions", json.dumps(event)
    )
    posted = [m for m in live["messages"] if "posted" in m]
    assert posted and posted[0]["posted"] == 202, live
    event_id = posted[0]["answer"]["event_id"]
    prediction = [m for m in live["messages"] if m.get("type") == "prediction"]
    assert prediction, live
    assert prediction[0]["event_id"] == event_id
    assert (prediction[0]["confidence"], prediction[0]["status"]) == (0.55, "review")
    decisions = [m for m in live["messages"] if m.get("type") == "decision"]
    assert [d["event_id"] for d in decisions] == [event_id]  # the console's type stays

    # The original scripts post without a key (and without an Origin).
    script = httpx.post(
        env.open_base + "/api/predictions",
        json={**event, "confidence": 0.95, "ground_truth": "3"},
    )
    assert script.status_code == 202 and script.json()["status"] == "auto", script.text

    base, mid = env.open_base, env.model_id
    queue = poll(
        lambda: [
            p
            for p in json.loads(_fetch(browser, env.page, base + "/api/review-queue")["body"])
            if p["id"] == event_id
        ],
        60,
        "the withheld prediction in the review queue",
    )
    assert queue[0]["status"] == "review"
    resolved = _fetch(
        browser,
        env.page,
        f"{base}/api/review/{event_id}",
        {"method": "POST", "headers": {"Content-Type": "application/json"},
         "body": json.dumps({"ground_truth": "3"})},
    )  # fmt: skip
    assert resolved.get("status") == 200, resolved
    for path in (
        f"/api/calibration?model_version_id={mid}",
        f"/api/risk-coverage?model_version_id={mid}",
        "/api/drift-alerts",
        f"/api/predictions?model_version_id={mid}",
    ):
        r = _fetch(browser, env.page, base + path)
        assert r.get("status") == 200, (path, r)
    # The anonymous principal holds only the chosen roles: no admin.
    r = _fetch(browser, env.page, base + "/api/keys")
    assert r.get("status") == 403, r


def test_live_feed_refuses_without_a_key_when_anonymous_mode_is_off(
    env: Env, browser: WebDriver
) -> None:
    browser.get(env.page + "/")
    ws_url = env.closed_base.replace("http://", "ws://") + "/ws/live"
    event = {"model_version_id": env.model_id, "predicted_label": "3", "confidence": 0.9}
    live = browser.execute_async_script(
        LIVE, ws_url, env.closed_base + "/api/predictions", json.dumps(event)
    )
    assert "closed" in live and not [m for m in live["messages"] if "type" in m], live


def test_anonymous_mode_beyond_loopback_is_refused_at_start(
    isolated_settings: Settings, env: Env
) -> None:
    proc = start_service(
        "gateway",
        isolated_settings,
        env.logs / "exposed.log",
        CALIBER_GATEWAY_ANONYMOUS="true",
        CALIBER_GATEWAY_HOST="0.0.0.0",
        CALIBER_GATEWAY_PORT="1",
    )
    assert proc.wait(60) == 2
    assert "CALIBER_GATEWAY_ANONYMOUS_FORCE" in (env.logs / "exposed.log").read_text()


def test_live_feed_refuses_an_origin_not_allowed_in_anonymous_mode(
    env: Env, browser: WebDriver
) -> None:
    browser.get(env.other_page + "/")
    ws_url = env.open_base.replace("http://", "ws://") + "/ws/live"
    live = browser.execute_async_script(LIVE, ws_url, env.open_base + "/health", "{}")
    assert "closed" in live and not [m for m in live["messages"] if "type" in m], live
