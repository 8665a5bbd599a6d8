"""The review loop end to end: gateway → ingest → policy → recorder → gateway → labels.

The gateway's own behaviour is tested alone in the other test_gateway_* modules.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.settings import Settings
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
    with psycopg.connect(isolated_settings.postgres_url) as conn:
        # The registry reaches model-updates (via the outbox) before the policy starts.
        _wait(
            lambda: conn.execute(
                "SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"
            ).fetchone()[0],  # type: ignore[index]
            30,
            "the outbox to be published",
        )
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
        # As instants: an ISO string on a whole second ("...:37Z") sorts after the same
        # second's fractions ("...:37.070000Z") as text.
        times = [datetime.fromisoformat(p["event_time"]) for p in queue]
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
