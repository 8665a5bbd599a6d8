"""The gateway alone on the real stack: keys and roles, tenants, bad requests, publishing.

Predictions the gateway lists are written straight into PostgreSQL, as the recorder would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from services.gateway.cli import app as keys_cli
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
from tests.integration.gateway_client import insert_predictions, make_keys, start_gateway
from tests.integration.kafka_io import TopicReader

CODEC = AvroCodec()
MAX_BODY = 256 * 1024
ROLES = ("admin", "producer", "reviewer", "viewer")


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    models: dict[str, int]
    predictions: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        key = self.keys.get(who or "", who)
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings,
        {
            **{r: ("acme", [r]) for r in ROLES},
            "globex": ("globex", ["admin"]),
        },
    )
    base, gateway = start_gateway(
        isolated_settings,
        tmp_path_factory.mktemp("gateway-api"),
        CALIBER_GATEWAY_MAX_BODY_BYTES=str(MAX_BODY),
    )
    e = Env(isolated_settings, base, keys, {}, {})
    with e.client("admin") as c:
        for version, extra in (
            ("v1", {"stage": "production", "abstain_threshold": 0.6}),
            ("v2", {"abstain_threshold": 0.8}),
        ):
            r = c.post("/api/models", json={"name": "triage", "version": version, **extra})
            assert r.status_code == 201, r.text
            e.models[version] = r.json()["id"]
    with e.client("globex") as c:
        r = c.post("/api/models", json={"name": "triage", "version": "v1"})
        e.models["globex"] = r.json()["id"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for i, (tenant, model, status) in enumerate(
        [("acme", "v1", "review"), ("acme", "v1", "auto"), ("globex", "globex", "review")]
    ):
        eid = str(uuid.uuid4())
        e.predictions[f"{tenant}-{status}"] = eid
        rows.append(
            {
                "event_id": eid,
                "tenant": tenant,
                "model_name": "triage",
                "model_version": "v1",
                "model_version_id": e.models[model],
                "event_time": start + timedelta(minutes=i),
                "status": status,
            }
        )
    insert_predictions(isolated_settings, rows)
    yield e
    gateway.terminate()  # type: ignore[attr-defined]
    gateway.wait(30)  # type: ignore[attr-defined]


def pred(model_id: int, confidence: float = 0.9, **extra: Any) -> dict[str, Any]:
    return {
        "model_version_id": model_id,
        "confidence": confidence,
        "predicted_label": "yes",
        **extra,
    }


READ, PRODUCE, REVIEW, ADMIN = (
    {"admin", "reviewer", "viewer"},
    {"admin", "producer"},
    {"admin", "reviewer"},
    {"admin"},
)
MATRIX: list[tuple[str, str, Any, set[str], int]] = [
    # method, path, body, roles allowed, status for them
    ("GET", "/api/models", None, READ, 200),
    ("POST", "/api/models", "NEW_MODEL", ADMIN, 201),
    ("GET", "/api/models/{v1}", None, READ, 200),
    ("PATCH", "/api/models/{v2}", {"abstain_threshold": 0.8}, ADMIN, 200),
    ("POST", "/api/models/{v2}/stage", {"stage": "staging"}, ADMIN, 200),
    ("GET", "/api/models/{v1}/lineage", None, READ, 200),
    ("GET", "/api/predictions", None, READ, 200),
    ("POST", "/api/predictions", "PRED", PRODUCE, 202),
    ("POST", "/api/predictions/batch", "BATCH", PRODUCE, 202),
    ("GET", "/api/review-queue", None, READ, 200),
    ("POST", "/api/review/{missing}", {"ground_truth": "x"}, REVIEW, 404),
    ("GET", "/api/me", None, set(ROLES), 200),
    ("GET", "/api/keys", None, ADMIN, 200),
    ("GET", "/metrics", None, set(ROLES), 200),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "expected"),
    MATRIX,
    ids=[f"{m} {p}" for m, p, *_ in MATRIX],
)
def test_access_matrix(
    env: Env, method: str, path: str, body: Any, allowed: set[str], expected: int
) -> None:
    url = path.format(v1=env.models["v1"], v2=env.models["v2"], missing=uuid.uuid4())
    for who in (*ROLES, None, "clb_not-a-key"):
        payload = (
            {
                "PRED": pred(env.models["v1"]),
                "BATCH": {"events": [pred(env.models["v1"])] * 2},
                "NEW_MODEL": {"name": f"m{uuid.uuid4().hex[:8]}", "version": "1"},
            }.get(body, body)
            if isinstance(body, str)
            else body
        )
        with env.client(who) as c:
            r = c.request(method, url, json=payload)
        if who not in ROLES:
            assert r.status_code == 401, (who, method, url, r.status_code)
            assert "API key" in r.text
        elif who in allowed:
            assert r.status_code == expected, (who, method, url, r.text)
        else:
            assert r.status_code == 403, (who, method, url, r.status_code)
            assert "roles" in r.json()["detail"]


def test_open_endpoints_need_no_key(env: Env) -> None:
    with env.client(None) as c:
        health = c.get("/health")
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
    assert health.status_code == 200, health.text
    deps = {d["name"]: d for d in health.json()["dependencies"]}
    assert set(deps) == {"kafka", "redis", "postgres", "live-feed"}
    assert all(d["status"] == "ok" and d["latency_ms"] >= 0 for d in deps.values())
    assert health.json()["status"] == "ok"
    assert {"/api/predictions", "/api/review/{event_id}", "/api/models/{model_id}/lineage"} <= set(
        spec["paths"]
    )


def test_websocket_needs_a_reading_key(env: Env) -> None:
    ws_base = env.base.replace("http", "ws") + "/ws/live"
    for who in (None, "producer"):
        query = f"?api_key={env.keys[who]}" if who else ""
        with pytest.raises(InvalidStatus) as info:
            connect(ws_base + query, open_timeout=10).close()
        assert info.value.response.status_code == 403
    with connect(ws_base, additional_headers={"X-API-Key": env.keys["viewer"]}) as ws:
        ws.ping().wait(5)


def test_a_tenant_never_sees_another_tenants_data(env: Env) -> None:
    v1, acme_review = env.models["v1"], env.predictions["acme-review"]
    with env.client("globex") as c:
        assert [m["id"] for m in c.get("/api/models").json()] == [env.models["globex"]]
        assert c.get(f"/api/models/{v1}").status_code == 404
        assert c.get(f"/api/models/{v1}/lineage").status_code == 404
        assert c.patch(f"/api/models/{v1}", json={"abstain_threshold": 0.1}).status_code == 404
        assert c.post(f"/api/models/{v1}/stage", json={"stage": "archived"}).status_code == 404
        child = c.post("/api/models", json={"name": "x", "version": "1", "parent_id": v1})
        assert child.status_code == 422 and "parent_id" in child.text
        listed = {p["event_id"] for p in c.get("/api/predictions").json()}
        assert listed == {env.predictions["globex-review"]}
        queue = {p["event_id"] for p in c.get("/api/review-queue").json()}
        assert queue == {env.predictions["globex-review"]}
        assert c.post(f"/api/review/{acme_review}", json={"ground_truth": "x"}).status_code == 404
        r = c.post("/api/predictions", json=pred(v1))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model_version_id"]
    with env.client("admin") as c:
        assert c.get(f"/api/models/{env.models['globex']}").status_code == 404
        listed = {p["event_id"] for p in c.get("/api/predictions").json()}
        assert env.predictions["globex-review"] not in listed
        assert env.predictions["acme-review"] in listed


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"confidence": 1.7}, "confidence", "1.7"),
        ({"confidence": -0.2}, "confidence", "[0, 1]"),
        ({"confidence": "high"}, "confidence", "number"),
        ({"predicted_label": 5}, "predicted_label", "string"),
        ({"predicted_label": None}, "predicted_label", "string"),
        ({"model_version_id": 999_999}, "model_version_id", "999999"),
        ({"model_version_id": None}, "model_version_id", "required"),
        ({"model_version_id": "one"}, "model_version_id", "integer"),
        ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
        ({"event_time": "yesterday"}, "event_time", "datetime"),
        # The REST field is event_time; the bound is the event-time window, not 2000-3000.
        ({"event_time": "1970-01-01T00:00:00Z"}, "event_time", "now + 300 s"),
        ({"probabilities": {"yes": 0.9, "no": 0.3}}, "probabilities", "sum to 1.2"),
        ({"probabilities": {"no": 1.0}}, "predicted_label", "no entry"),
        ({"features": {"age": {"nested": 1}}}, "features", "valid number"),
    ],
)
def test_bad_requests_name_the_field_and_reason(
    env: Env, change: dict[str, Any], field: str, reason: str
) -> None:
    with env.client("producer") as c:
        r = c.post("/api/predictions", json={**pred(env.models["v1"]), **change})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in d["loc"] for d in detail), detail
    assert any(reason in d["msg"] for d in detail), detail


def test_batch_rejects_all_and_names_each_faulty_event(env: Env) -> None:
    good = pred(env.models["v1"])
    events = [good, {**good, "confidence": 1.7}, good, {**good, "model_version_id": 999_999}]
    with env.client("producer") as c:
        r = c.post("/api/predictions/batch", json={"events": events})
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [
        ["body", "events", 1, "confidence"],
        ["body", "events", 3, "model_version_id"],
    ]


def test_oversized_body_is_413_naming_the_limit(env: Env) -> None:
    event = pred(env.models["v1"], metadata={"pad": "x" * 200})
    body = {"events": [event] * (MAX_BODY // 200)}
    with env.client("producer") as c:
        r = c.post("/api/predictions/batch", json=body)
    assert r.status_code == 413
    assert f"{MAX_BODY} bytes" in r.text and "CALIBER_GATEWAY_MAX_BODY_BYTES" in r.text


def test_accepted_events_reach_inference_raw_with_the_predicted_decision(env: Env) -> None:
    topic = Topics.for_namespace(env.settings.topic_namespace).inference_raw
    reader = TopicReader(env.settings, [topic], CODEC)
    v1 = env.models["v1"]
    with env.client("producer") as c:
        below = c.post("/api/predictions", json=pred(v1, 0.59, features={"age": 41.0}))
        at = c.post("/api/predictions", json=pred(v1, 0.6, ground_truth="yes"))
        batch = c.post(
            "/api/predictions/batch",
            json={"events": [pred(v1, 0.3), pred(env.models["v2"], 0.85), pred(v1, 0.95)]},
        )
    assert below.status_code == at.status_code == batch.status_code == 202
    b, a = below.json(), at.json()
    assert (b["status"], b["threshold"], b["model_version_id"]) == ("review", 0.6, v1)
    assert (a["status"], a["correct"], a["id"]) == ("auto", True, a["event_id"])
    assert b["model_name"] == "triage" and b["model_version"] == "v1"
    decided = [(p["status"], p["threshold"]) for p in batch.json()["predictions"]]
    assert decided == [("review", 0.6), ("auto", 0.8), ("auto", 0.6)]
    singles = {b["event_id"], a["event_id"]}
    batched = [p["event_id"] for p in batch.json()["predictions"]]

    def seen() -> tuple[dict[str, Any], list[str]]:
        events = {
            d.record["event_id"]: d.record
            for d in reader.records[topic]
            if d.name == "InferenceEvent"
        }
        ids = [
            i
            for d in reader.records[topic]
            if d.name == "PredictionBatch"
            for i in d.record["event_ids"]
        ]
        return events, ids

    reader.wait_for(
        lambda: singles <= set(seen()[0]) and set(batched) <= set(seen()[1]),
        30,
        "the accepted events on inference.raw",
    )
    reader.close()
    record = seen()[0][b["event_id"]]
    assert record["tenant"] == "acme" and record["model_version_id"] == v1
    assert record["confidence"] == 0.59 and record["features"] == {"age": 41.0}


def test_threshold_change_moves_the_predicted_decision(env: Env) -> None:
    with env.client("admin") as c:
        model = c.post(
            "/api/models", json={"name": "moving", "version": "1", "abstain_threshold": 0.5}
        ).json()
        with env.client("producer") as p:
            assert (
                p.post("/api/predictions", json=pred(model["id"], 0.7)).json()["status"] == "auto"
            )
            r = c.patch(f"/api/models/{model['id']}", json={"abstain_threshold": 0.9})
            assert r.status_code == 200 and r.json()["abstain_threshold"] == 0.9
            # The registry view follows model-updates; bounded wait for the relay's record.
            deadline = datetime.now(UTC) + timedelta(seconds=15)
            while datetime.now(UTC) < deadline:
                answer = p.post("/api/predictions", json=pred(model["id"], 0.7)).json()
                if answer["status"] == "review":
                    break
            assert answer["status"] == "review" and answer["threshold"] == 0.9


def test_keys_api_creates_and_revokes(env: Env) -> None:
    with env.client("admin") as c:
        created = c.post("/api/keys", json={"roles": ["viewer"]})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert created.json()["tenant"] == "acme" and created.json()["prefix"] == key[:10]
        with env.client(key) as v:
            assert v.get("/api/me").json()["roles"] == ["viewer"]
            assert v.get("/api/models").status_code == 200
            assert v.post("/api/keys", json={"roles": ["admin"]}).status_code == 403
        assert c.delete(f"/api/keys/{created.json()['id']}").status_code == 204
        with env.client(key) as v:
            assert v.get("/api/models").status_code == 401
        assert c.post("/api/keys", json={"roles": ["root"]}).status_code == 422
    with env.client("globex") as g:
        assert g.delete(f"/api/keys/{created.json()['id']}").status_code == 404


def test_metrics_count_requests_by_route_template(env: Env) -> None:
    with env.client("viewer") as c:
        for _ in range(2):
            c.get(f"/api/models/{env.models['v1']}")
        text = c.get("/metrics").text
    assert (
        'caliber_gateway_requests_total{code="200",method="GET",route="/api/models/{model_id}"}'
        in text
    )
    assert "caliber_gateway_request_seconds_bucket" in text
    assert "caliber_gateway_outbox_backlog" in text
    assert "caliber_gateway_ws_clients" in text and "caliber_gateway_ws_dropped_total" in text
    assert f'route="/api/models/{env.models["v1"]}"' not in text, "no ids in label values"


def test_cli_creates_lists_and_revokes_keys(env: Env) -> None:
    runner = CliRunner()
    dsn = {"CALIBER_POSTGRES_DSN": env.settings.postgres_url}
    created = runner.invoke(
        keys_cli, ["create", "--tenant", "initech", "--roles", "viewer,reviewer"], env=dsn
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    assert key.startswith("clb_") and len(key) > 40
    with env.client(key) as c:
        me = c.get("/api/me").json()
        assert (me["tenant"], me["roles"]) == ("initech", ["reviewer", "viewer"])
        key_id = me["key_id"]
        listed = runner.invoke(keys_cli, ["list", "--tenant", "initech"], env=dsn)
        assert key[:10] in listed.output and "active" in listed.output
        bad = runner.invoke(keys_cli, ["create", "--tenant", "initech", "--roles", "root"], env=dsn)
        assert bad.exit_code != 0 and "root" in bad.output
        assert runner.invoke(keys_cli, ["revoke", str(key_id)], env=dsn).exit_code == 0
        deadline = time.monotonic() + 15  # the gateway trusts a looked-up key for 5 s
        while c.get("/api/me").status_code != 401:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.5)
