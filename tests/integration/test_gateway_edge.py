"""The gateway's edge on the real stack: keys before bodies, body limits, bounded errors,
strict and int64-bounded inputs, keys in query strings, rate limits, a large reference.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from services.gateway.errors import MAX_ERROR_BYTES, MAX_EXCERPT
from shared.settings import Settings
from tests.integration.gateway_client import make_keys, start_gateway

MAX_BODY = 2 * 1024 * 1024
BEYOND_INT64 = 2**63


@dataclass
class Gateway:
    base: str
    proc: Any
    log: Path
    keys: dict[str, str]
    model: int

    def client(self, who: str | None = "admin") -> httpx.Client:
        headers = {"X-API-Key": self.keys[who]} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)


def _gateway(
    settings: Settings, logs: Path, keys: dict[str, str], model_name: str, **extra: str
) -> Iterator[Gateway]:
    base, proc = start_gateway(settings, logs, **extra)
    gw = Gateway(base, proc, logs / "gateway.log", keys, 0)
    with gw.client() as c:
        r = c.post("/api/models", json={"name": model_name, "version": "1", "stage": "production"})
        assert r.status_code == 201, r.text
        gw.model = r.json()["id"]
    yield gw
    proc.terminate()  # type: ignore[attr-defined]
    proc.wait(30)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def keys(isolated_settings: Settings) -> dict[str, str]:
    return make_keys(
        isolated_settings, {"admin": ("acme", ["admin"]), "viewer": ("acme", ["viewer"])}
    )


@pytest.fixture(scope="module")
def gw(
    isolated_settings: Settings, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    yield from _gateway(
        isolated_settings,
        tmp_path_factory.mktemp("edge"),
        keys,
        "edge",
        CALIBER_GATEWAY_MAX_BODY_BYTES=str(MAX_BODY),
        CALIBER_LOG_LEVEL="DEBUG",  # uvicorn's access log is on at DEBUG
    )


def pred(model: int, **extra: Any) -> dict[str, Any]:
    return {"model_version_id": model, "confidence": 0.9, "predicted_label": "yes", **extra}


def raw_request(base: str, head: str, body: bytes = b"", timeout: float = 30) -> bytes:
    """Send ``head`` (request line and headers) and ``body`` on a raw socket; the answer's
    first bytes, read as soon as the server answers (it need not read the whole body)."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_lone_surrogate_in_a_json_string_is_422_json_naming_the_field(gw: Gateway) -> None:
    body = json.dumps(pred(gw.model)).replace('"yes"', '"ye\\ud800s"').encode()
    with gw.client() as c:
        r = c.post("/api/predictions", content=body, headers={"Content-Type": "application/json"})
        named = c.post(
            "/api/models",
            content=b'{"name": "\\udfff", "version": "1"}',
            headers={"Content-Type": "application/json"},
        )
        paired = c.post("/api/predictions", json=pred(gw.model, predicted_label="ok \U0001f600"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "predicted_label"]
    assert r.json()["detail"][0]["type"] == "string_surrogate"
    assert named.status_code == 422 and named.json()["detail"][0]["loc"] == ["body", "name"]
    assert paired.status_code == 202, paired.text  # a proper surrogate pair is a character


def test_integers_beyond_int64_are_422_never_a_dropped_connection(gw: Gateway) -> None:
    with gw.client() as c:
        answers = [
            c.get(f"/api/models/{BEYOND_INT64}"),
            c.get(f"/api/models/{-BEYOND_INT64 - 1}/lineage"),
            c.get("/api/calibration", params={"model_version_id": BEYOND_INT64}),
            c.get("/api/predictions", params={"model_version_id": BEYOND_INT64}),
            c.post("/api/predictions", json=pred(BEYOND_INT64)),
            c.post("/api/models", json={"name": "p", "version": "1", "parent_id": BEYOND_INT64}),
            c.put(
                "/api/drift/thresholds",
                json={"model_version_id": BEYOND_INT64, "thresholds": {"x": 0.2}},
            ),
            c.delete(f"/api/keys/{BEYOND_INT64}"),
        ]
        in_range = c.get(f"/api/models/{BEYOND_INT64 - 1}")
    for r in answers:
        assert r.status_code == 422, (r.request.url, r.text)
        assert r.headers["content-type"] == "application/json"
        # A request model bounds it (pydantic's type), or, in an event, the shared limits
        # (the stable code REST and Kafka share).
        assert r.json()["detail"][0]["type"] in (
            "less_than_equal",
            "greater_than_equal",
            "number_out_of_range",
        )
    assert in_range.status_code == 404


def reference(model: int, n: int, x: list[float]) -> dict[str, Any]:
    return {
        "model_version_id": model,
        "events": [
            {"confidence": 0.8, "predicted_label": "a", "features": {"x": x[i % len(x)]}}
            for i in range(n)
        ],
    }


def test_reference_values_near_the_float_limit_are_422(gw: Gateway) -> None:
    with gw.client() as c:
        r = c.post("/api/drift/reference", json=reference(gw.model, 200, [1e308, -1e308, 0.5]))
        columns = c.post(
            "/api/drift/reference/columns",
            json={
                "model_version_id": gw.model,
                "confidence": [0.8] * 200,
                "predicted_label": ["a"] * 200,
                "features": {"x": [1e308, -1e308] * 100},
            },
        )
        infinite = c.post(
            "/api/drift/reference",
            content=json.dumps(reference(gw.model, 200, [float("inf"), 0.5])).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "features", "x"]
    assert columns.status_code == 422 and columns.json()["detail"][0]["loc"][-1] == "x"
    assert infinite.status_code == 422 and "finite" in infinite.text


def test_oversize_chunked_body_is_413(gw: Gateway) -> None:
    chunk = b"[" + b"0," * 32_767 + b"0]"

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // len(chunk) + 2):
            yield chunk

    with gw.client() as c:
        r = c.post("/api/predictions/batch", content=chunks())
    assert r.status_code == 413, r.text
    assert f"{MAX_BODY} bytes" in r.text and "CALIBER_GATEWAY_MAX_BODY_BYTES" in r.text
    assert r.request.headers["transfer-encoding"] == "chunked"
    # The same on a raw socket: chunks past the limit, no terminating chunk ever sent.
    size = 256 * 1024
    body = b"".join(f"{size:x}\r\n".encode() + b" " * size + b"\r\n" for _ in range(10))
    answer = raw_request(
        gw.base,
        "POST /api/predictions/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {gw.keys['admin']}\r\nTransfer-Encoding: chunked\r\n",
        body,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_unauthenticated_oversize_body_is_401_without_the_body_being_read(gw: Gateway) -> None:
    # 1 GB declared, 16 bytes sent: an answer proves the body was neither read nor parsed.
    for key_header in ("", "X-API-Key: clb_wrong\r\n"):
        answer = raw_request(
            gw.base,
            "POST /api/predictions/batch HTTP/1.1\r\nHost: t\r\n"
            f"Content-Type: application/json\r\n{key_header}Content-Length: {10**9}\r\n",
            b'{"events": [{"m',
        )
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    with gw.client(None) as c:
        r = c.post("/api/predictions/batch", content=b"{" * (MAX_BODY + 1))
    assert r.status_code == 401 and r.json()["detail"].startswith("a valid API key")


def test_a_key_in_the_query_string_is_refused_on_rest_accepted_on_ws_and_never_logged(
    gw: Gateway,
) -> None:
    key = gw.keys["viewer"]
    r = httpx.get(f"{gw.base}/api/me", params={"api_key": key}, timeout=30)
    assert r.status_code == 401
    ws_url = gw.base.replace("http", "ws") + f"/ws/live?api_key={key}"
    with connect(ws_url, open_timeout=10) as ws:
        ws.ping().wait(5)
    with gw.client("viewer") as c:
        assert c.get("/api/me").status_code == 200  # the header form
        assert c.get("/api/me", headers={"X-API-Key": "", "Authorization": f"Bearer {key}"})
    time.sleep(1.0)  # let the log lines of the connection reach the file
    log = gw.log.read_text()
    assert "/ws/live?api_key=***" in log, "the WebSocket line is logged, redacted"
    assert "/api/me?api_key=***" in log, "the access log is on (DEBUG) and redacted"
    assert key not in log and key[10:] not in log


def test_a_boolean_or_a_string_is_not_a_number(gw: Gateway) -> None:
    with gw.client() as c:
        answers = {
            "patch true": c.patch(f"/api/models/{gw.model}", json={"abstain_threshold": True}),
            "patch str": c.patch(f"/api/models/{gw.model}", json={"abstain_threshold": "0.5"}),
            "register": c.post(
                "/api/models", json={"name": "b", "version": "1", "abstain_threshold": True}
            ),
            "confidence": c.post("/api/predictions", json=pred(gw.model, confidence=True)),
            "feature": c.post("/api/predictions", json=pred(gw.model, features={"x": False})),
            "drift": c.put(
                "/api/drift/thresholds",
                json={"model_version_id": gw.model, "thresholds": {"x": True}},
            ),
        }
        model = c.get(f"/api/models/{gw.model}").json()
    for name, r in answers.items():
        assert r.status_code == 422, (name, r.text)
    assert answers["patch true"].json()["detail"][0]["loc"] == ["body", "abstain_threshold"]
    assert "valid number" in answers["patch true"].json()["detail"][0]["msg"]
    assert model["abstain_threshold"] == 0.7  # unchanged


def test_a_422_on_a_huge_faulty_batch_stays_small_and_echoes_no_input(gw: Gateway) -> None:
    faulty = [pred(gw.model, confidence=1.7) for _ in range(9000)]
    with gw.client() as c:
        batch = c.post("/api/predictions/batch", json={"events": faulty})
        typed = c.post("/api/predictions/batch", json={"events": [{"confidence": "x"}] * 9000})
        echoed = c.post("/api/predictions", json=pred(gw.model, confidence="9" * 1_500_000))
    for r in (batch, typed, echoed):
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) <= MAX_ERROR_BYTES, len(r.content)
        body = r.json()
        assert all(len(d.get("input") or "") <= MAX_EXCERPT for d in body["detail"])
    assert len(batch.json()["detail"]) + batch.json()["omitted"] == 9000
    assert batch.json()["detail"][0]["loc"] == ["body", "events", 0, "confidence"]
    assert typed.json()["omitted"] > 0
    assert "9" * (MAX_EXCERPT + 1) not in echoed.text
    print(
        f"422 sizes: batch {len(batch.content)} B, typed {len(typed.content)} B, "
        f"echo {len(echoed.content)} B"
    )


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_reference_of_100000_events_of_20_features_is_accepted_as_columns(
    gw: Gateway,
) -> None:
    n, rng = 100_000, np.random.default_rng(13)
    features: dict[str, Any] = {f"x{i}": rng.normal(size=n).round(6).tolist() for i in range(19)}
    features["kind"] = [f"k{j % 7}" for j in range(n)]
    body = json.dumps(
        {
            "model_version_id": gw.model,
            "confidence": rng.uniform(0.5, 1.0, n).round(6).tolist(),
            "predicted_label": [f"c{j % 3}" for j in range(n)],
            "features": features,
        }
    ).encode()
    before = rss_peak_kb(gw.proc.pid)
    with gw.client() as c:
        rows = c.post("/api/drift/reference/columns", content=body[: MAX_BODY // 2])
        r = c.post(
            "/api/drift/reference/columns",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    peak = rss_peak_kb(gw.proc.pid)
    assert rows.status_code == 422 and len(rows.content) < MAX_ERROR_BYTES  # cut JSON
    assert r.status_code == 201, r.text[:500]
    assert r.json()["n_samples"] == n and len(r.json()["features"]) == 20
    growth = (peak - before) * 1024
    print(
        f"reference of {len(body) / 1e6:.1f} MB: gateway peak RSS {before / 1024:.0f} -> "
        f"{peak / 1024:.0f} MiB (+{growth / len(body):.1f}x the body)"
    )
    # The README's bound: the columns as Python floats (8 bytes of JSON become 32) beside
    # the body itself; measured about 9x.
    assert growth < 12 * len(body), "the gateway holds at most 12 times the body"


@pytest.fixture(scope="module")
def limited(
    isolated_settings: Settings, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    yield from _gateway(
        isolated_settings,
        tmp_path_factory.mktemp("limited"),
        keys,
        "limited",
        CALIBER_GATEWAY_RATE_REQUESTS_PER_SECOND="0.5",
        CALIBER_GATEWAY_RATE_EVENTS_PER_SECOND="0.5",
        CALIBER_GATEWAY_RATE_BURST_SECONDS="8",
    )


def test_rate_limits_answer_429_with_retry_after(limited: Gateway) -> None:
    # Requests: a bucket of 4 (0.5/s for 8 s); the model registration took one.
    with limited.client("viewer") as c:
        answers = [c.get("/api/me") for _ in range(5)]
    codes = [r.status_code for r in answers]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
    refused = next(r for r in answers if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert "CALIBER_GATEWAY_RATE_REQUESTS_PER_SECOND" in refused.json()["detail"]
    # Events: another key's bucket of 4 events; 3 pass, then 3 more do not.
    with limited.client("admin") as c:
        first = c.post("/api/predictions/batch", json={"events": [pred(limited.model)] * 3})
        second = c.post("/api/predictions/batch", json={"events": [pred(limited.model)] * 3})
    assert first.status_code == 202, first.text
    assert second.status_code == 429 and "EVENTS_PER_SECOND" in second.text
    assert int(second.headers["retry-after"]) >= 4
