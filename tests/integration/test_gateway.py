"""The gateway on the real stack, with ingest, policy and recorder behind it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from shared.codec import AvroCodec
from shared.settings import Settings
from shared.topics import Topics
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader

CODEC = AvroCodec()


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    models: dict[str, int]

    def client(self, key: str | None) -> httpx.Client:
        headers = {"X-API-Key": self.keys[key]} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("gateway")
    keys = make_keys(
        isolated_settings,
        {
            "admin": ("acme", ["admin"]),
            "producer": ("acme", ["producer"]),
            "reviewer": ("acme", ["reviewer"]),
            "viewer": ("acme", ["viewer"]),
            "other": ("globex", ["admin"]),
        },
    )
    base, gateway = start_gateway(isolated_settings, logs)
    e = Env(isolated_settings, base, keys, {})
    with e.client("admin") as c:
        v1 = c.post(
            "/api/models",
            json={
                "name": "triage",
                "version": "v1",
                "stage": "production",
                "abstain_threshold": 0.6,
            },
        )
        assert v1.status_code == 201, v1.text
        v2 = c.post(
            "/api/models",
            json={
                "name": "triage",
                "version": "v2",
                "parent_id": v1.json()["id"],
                "abstain_threshold": 0.8,
            },
        )
        assert v2.status_code == 201, v2.text
        e.models = {"v1": v1.json()["id"], "v2": v2.json()["id"]}
    time.sleep(1.0)  # the outbox relay publishes the registry before the policy starts
    workers = [
        start_service(n, isolated_settings, logs / f"{n}.log")
        for n in ("ingest", "policy", "recorder")
    ]
    yield e
    for p in [*workers, gateway]:
        p.terminate()  # type: ignore[attr-defined]
    for p in [*workers, gateway]:
        p.wait(30)  # type: ignore[attr-defined]


def _prediction(model_id: int, confidence: float, **extra: Any) -> dict[str, Any]:
    return {
        "model_version_id": model_id,
        "confidence": confidence,
        "predicted_label": "yes",
        **extra,
    }


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_review_flow_end_to_end(env: Env) -> None:
    confidences = [0.5, 0.65, 0.75, 0.9]
    sent: dict[str, tuple[str, float]] = {}
    with env.client("producer") as c:
        for version, model_id in env.models.items():
            for conf in confidences:
                r = c.post("/api/predictions", json=_prediction(model_id, conf))
                assert r.status_code == 202, r.text
                body = r.json()
                threshold = 0.6 if version == "v1" else 0.8
                assert body["status"] == ("review" if conf < threshold else "auto")
                assert body["threshold"] == threshold
                sent[body["event_id"]] = (version, conf)
    expected_review = {eid for eid, (v, conf) in sent.items() if conf < (0.6 if v == "v1" else 0.8)}
    with env.client("reviewer") as c:
        queue = _wait(
            lambda: (
                (q := c.get("/api/review-queue", params={"limit": 1000}).json())
                and len(q) >= len(expected_review)
                and q
            ),
            60,
            "the review queue to fill",
        )
        assert {p["event_id"] for p in queue} == expected_review
        times = [p["event_time"] for p in queue]
        assert times == sorted(times), "oldest first"
        only_v2 = c.get("/api/review-queue", params={"model_version_id": env.models["v2"]}).json()
        assert {p["event_id"] for p in only_v2} == {
            e for e in expected_review if sent[e][0] == "v2"
        }

        target = sorted(expected_review)[0]
        reader = TopicReader(
            env.settings, [Topics.for_namespace(env.settings.topic_namespace).labels], CODEC
        )
        first = c.post(f"/api/review/{target}", json={"ground_truth": "yes"})
        assert first.status_code == 200, first.text
        assert first.json()["correct"] is True and first.json()["status"] == "resolved"
        second = c.post(f"/api/review/{target}", json={"ground_truth": "no"})
        assert second.status_code == 409
        assert c.post(f"/api/review/{uuid.uuid4()}", json={"ground_truth": "x"}).status_code == 404
    labels_topic = Topics.for_namespace(env.settings.topic_namespace).labels
    reader.wait_for(
        lambda: any(
            target in d.record["event_ids"] and "review" in d.record["sources"]
            for d in reader.records[labels_topic]
        ),
        60,
        "the review label on the labels topic",
    )
    reader.close()
    with psycopg.connect(env.settings.postgres_url) as conn:
        row = _wait(
            lambda: conn.execute(
                "SELECT status, ground_truth, correct, label_source FROM predictions "
                "WHERE event_id = %s AND status = 'resolved'",
                (target,),
            ).fetchone(),
            60,
            "the resolved row",
        )
    assert row == ("resolved", "yes", True, "review")
    with env.client("viewer") as c:
        remaining = {p["event_id"] for p in c.get("/api/review-queue").json()}
    assert remaining == expected_review - {target}


ROLE_MATRIX = [
    # (method, path, json, roles allowed)
    ("GET", "/api/models", None, {"admin", "reviewer", "viewer"}),
    ("POST", "/api/models", {"name": "m{n}", "version": "1"}, {"admin"}),
    ("GET", "/api/predictions", None, {"admin", "reviewer", "viewer"}),
    ("POST", "/api/predictions", "PRED", {"admin", "producer"}),
    ("GET", "/api/review-queue", None, {"admin", "reviewer", "viewer"}),
    ("POST", "/api/review/{missing}", {"ground_truth": "x"}, {"admin", "reviewer"}),
    ("GET", "/api/models/{v1}/lineage", None, {"admin", "reviewer", "viewer"}),
    ("PATCH", "/api/models/{v1}", {"abstain_threshold": 0.6}, {"admin"}),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), ROLE_MATRIX, ids=lambda v: str(v)[:30]
)
def test_access_matrix(env: Env, method: str, path: str, body: Any, allowed: set[str]) -> None:
    for role in ("admin", "producer", "reviewer", "viewer", None):
        url = path.format(v1=env.models["v1"], missing=uuid.uuid4())
        payload = _prediction(env.models["v1"], 0.9) if body == "PRED" else body
        if isinstance(payload, dict) and "name" in payload:
            payload = {**payload, "name": f"m{uuid.uuid4().hex[:6]}"}
        with env.client(role) as c:
            r = c.request(method, url, json=payload)
        if role is None:
            assert r.status_code == 401, (role, method, url)
        elif role in allowed:
            assert r.status_code in (200, 201, 202, 404), (role, method, url, r.text)
            if "{missing}" not in path:
                assert r.status_code != 404, (role, method, url)
        else:
            assert r.status_code == 403, (role, method, url, r.status_code)


def test_another_tenant_sees_nothing(env: Env) -> None:
    v1 = env.models["v1"]
    with env.client("other") as c:
        assert c.get("/api/models").json() == []
        assert c.get(f"/api/models/{v1}").status_code == 404
        assert c.get(f"/api/models/{v1}/lineage").status_code == 404
        assert c.patch(f"/api/models/{v1}", json={"abstain_threshold": 0.1}).status_code == 404
        assert c.post(f"/api/models/{v1}/stage", json={"stage": "archived"}).status_code == 404
        assert c.get("/api/predictions").json() == []
        assert c.get("/api/review-queue").json() == []
        r = c.post("/api/predictions", json=_prediction(v1, 0.9))
        assert r.status_code == 422 and "model_version_id" in r.text
    with env.client("admin") as c:
        some = c.get("/api/predictions").json()
    if some:
        with env.client("other") as c:
            assert (
                c.post(f"/api/review/{some[0]['event_id']}", json={"ground_truth": "x"}).status_code
                == 404
            )


@pytest.mark.parametrize(
    ("payload", "field", "status"),
    [
        ({"confidence": "high"}, "confidence", 422),
        ({"confidence": 1.7}, "confidence", 422),
        ({"confidence": 0.9, "probabilities": {"yes": 0.9, "no": 0.3}}, "probabilities", 422),
        ({"predicted_label": 5}, "predicted_label", 422),
        ({"model_version_id": 999_999}, "model_version_id", 422),
        ({"model_version_id": None}, "model_version_id", 422),
        ({"event_id": "not-a-uuid"}, "event_id", 422),
    ],
)
def test_bad_requests_name_the_field(
    env: Env, payload: dict[str, Any], field: str, status: int
) -> None:
    body = {**_prediction(env.models["v1"], 0.9), **payload}
    with env.client("producer") as c:
        r = c.post("/api/predictions", json=body)
    assert r.status_code == status, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs


def test_batch_form_names_the_faulty_event(env: Env) -> None:
    events = [_prediction(env.models["v1"], 0.9), _prediction(env.models["v1"], 1.7)]
    with env.client("producer") as c:
        r = c.post("/api/predictions/batch", json={"events": events})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "events", 1, "confidence"]
        ok = c.post("/api/predictions/batch", json={"events": events[:1] * 3})
        assert ok.status_code == 202 and ok.json()["accepted"] == 3


def test_oversized_body_is_413(env: Env) -> None:
    huge = {"events": [_prediction(env.models["v1"], 0.9, metadata={"pad": "x" * 200})] * 30_000}
    with env.client("producer") as c:
        r = c.post(
            "/api/predictions/batch",
            content=json.dumps(huge),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413
    assert "CALIBER_GATEWAY_MAX_BODY_BYTES" in r.text


def test_registry_promotion_lineage_and_updates(env: Env) -> None:
    reader = TopicReader(
        env.settings, [Topics.for_namespace(env.settings.topic_namespace).model_updates], CODEC
    )
    with env.client("admin") as c:
        v3 = c.post(
            "/api/models", json={"name": "triage", "version": "v3", "parent_id": env.models["v2"]}
        ).json()
        r = c.post(f"/api/models/{v3['id']}/stage", json={"stage": "production"})
        assert r.status_code == 200 and r.json()["stage"] == "production"
        stages = {
            m["version"]: m["stage"] for m in c.get("/api/models").json() if m["name"] == "triage"
        }
        assert stages == {"v1": "archived", "v2": "staging", "v3": "production"}
        lin = c.get(f"/api/models/{env.models['v2']}/lineage").json()
        assert [m["version"] for m in lin["ancestors"]] == ["v1"]
        assert [m["version"] for m in lin["descendants"]] == ["v3"]
        dup = c.post("/api/models", json={"name": "triage", "version": "v3"})
        assert dup.status_code == 409
    topic = Topics.for_namespace(env.settings.topic_namespace).model_updates

    def latest() -> dict[str, str]:
        return {
            d.record["version"]: d.record["stage"]
            for d in reader.records[topic]
            if d.record["name"] == "triage"
        }

    reader.wait_for(
        lambda: latest().get("v3") == "production" and latest().get("v1") == "archived",
        30,
        "registry updates",
    )
    reader.close()


async def _collect(url: str, n: int, seconds: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        deadline = time.monotonic() + seconds
        while len(out) < n and time.monotonic() < deadline:
            try:
                out.append(json.loads(await asyncio.wait_for(ws.recv(), 2)))
            except TimeoutError:
                continue
    return out


def test_websocket_streams_decisions_in_order_and_drops_slow_clients(env: Env) -> None:
    ws_base = env.base.replace("http", "ws") + "/ws/live"
    v1 = env.models["v1"]

    async def scenario() -> tuple[list[dict[str, Any]], bool]:
        fast_url = f"{ws_base}?api_key={env.keys['viewer']}&model_version_id={v1}"
        slow_url = f"{ws_base}?api_key={env.keys['viewer']}"
        async with websockets.connect(slow_url, max_queue=1) as slow:
            collector = asyncio.create_task(_collect(fast_url, 40, 60))
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient(
                base_url=env.base, headers={"X-API-Key": env.keys["producer"]}
            ) as c:
                for i in range(40):
                    event_time = f"2026-11-22T10:00:{i:02d}Z"
                    r = await c.post(
                        "/api/predictions",
                        json=_prediction(v1, 0.61 + i * 0.005, event_time=event_time),
                    )
                    assert r.status_code == 202
                # Flood the slow client, which never reads, past its queue.
                batch = {"events": [_prediction(env.models["v2"], 0.9)] * 500}
                for _ in range(4):
                    assert (await c.post("/api/predictions/batch", json=batch)).status_code == 202
            got = await collector
            closed = False
            try:
                while True:
                    await asyncio.wait_for(slow.recv(), 5)
            except websockets.ConnectionClosed as exc:
                closed = exc.rcvd is not None and exc.rcvd.code == 1008
            except TimeoutError:
                closed = False
            return got, closed

    got, slow_closed = asyncio.run(scenario())
    decisions = [e for e in got if e["type"] == "decision"]
    assert len(decisions) == 40
    assert all(e["model_version_id"] == v1 for e in decisions)
    times = [e["event_time_ms"] for e in decisions]
    assert times == sorted(times), "decisions of one model version arrive in order"
    assert slow_closed, "a client that never reads is dropped"
