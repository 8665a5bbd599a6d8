"""Registry and reviews on the real stack; their records leave through the outbox.

Predictions under review are written straight into PostgreSQL, as the recorder would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import consumer_config
from shared.settings import Settings
from tests.integration.gateway_client import insert_predictions, make_keys, start_gateway
from tests.integration.kafka_io import TopicReader

CODEC = AvroCodec()


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    topics: Topics

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[who]}, timeout=30)

    def db(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.postgres_url) as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys(
        isolated_settings, {"admin": ("acme", ["admin"]), "reviewer": ("acme", ["reviewer"])}
    )
    base, gateway = start_gateway(isolated_settings, tmp_path_factory.mktemp("gateway-registry"))
    yield Env(
        isolated_settings, base, keys, Topics.for_namespace(isolated_settings.topic_namespace)
    )
    gateway.terminate()  # type: ignore[attr-defined]
    gateway.wait(30)  # type: ignore[attr-defined]


def register(c: httpx.Client, name: str, version: str, **extra: Any) -> dict[str, Any]:
    r = c.post("/api/models", json={"name": name, "version": version, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_promotion_keeps_one_production_and_publishes_every_change(env: Env) -> None:
    reader = TopicReader(env.settings, [env.topics.model_updates], CODEC)
    with env.client("admin") as c:
        v1 = register(c, "triage", "v1", stage="production", abstain_threshold=0.6)
        v2 = register(c, "triage", "v2", parent_id=v1["id"])
        other = register(c, "other", "v1", stage="production")
        promoted = c.post(f"/api/models/{v2['id']}/stage", json={"stage": "production"})
        assert promoted.status_code == 200 and promoted.json()["stage"] == "production"
        stages = {
            m["version"]: m["stage"] for m in c.get("/api/models").json() if m["name"] == "triage"
        }
        assert stages == {"v1": "archived", "v2": "production"}
        assert c.get(f"/api/models/{other['id']}").json()["stage"] == "production", (
            "another model's production version is untouched"
        )
        v3 = register(c, "triage", "v3", stage="production")
        assert c.get(f"/api/models/{v2['id']}").json()["stage"] == "archived"
        patched = c.patch(f"/api/models/{v3['id']}", json={"abstain_threshold": 0.75})
        assert patched.json()["abstain_threshold"] == 0.75
        assert c.post("/api/models", json={"name": "triage", "version": "v3"}).status_code == 409
        assert (
            c.patch(f"/api/models/{v3['id']}", json={"abstain_threshold": 1.5}).status_code == 422
        )
        assert c.post(f"/api/models/{v3['id']}/stage", json={"stage": "live"}).status_code == 422

    expected = {
        f"acme/triage/{m['version']}": (m["id"], stage, threshold)
        for m, stage, threshold in (
            (v1, "archived", 0.6),
            (v2, "archived", 0.7),
            (v3, "production", 0.75),
        )
    }
    topic = env.topics.model_updates

    def latest() -> dict[str, tuple[int, str, float]]:
        out = {}
        for raw_key, d in zip(keys_of(reader, topic), reader.records[topic], strict=True):
            out[raw_key] = (d.record["id"], d.record["stage"], d.record["abstain_threshold"])
        return out

    reader.wait_for(
        lambda: {k: v for k, v in latest().items() if "/triage/" in k} == expected,
        30,
        "the registry's latest state on model-updates",
    )
    # v1 registered, archived once (v2's promotion); v2 registered, promoted, archived (v3);
    # v3 registered, threshold changed: a record per change.
    per_key = [k for k in keys_of(reader, topic) if "/triage/" in k]
    assert per_key.count("acme/triage/v1") == 2
    assert per_key.count("acme/triage/v2") == 3
    assert per_key.count("acme/triage/v3") == 2
    reader.close()
    keyed = message_keys(env.settings, topic)
    assert keyed and all(k == named.encode() for k, named in keyed), "keyed by model key"
    assert env.db("SELECT count(*) FROM outbox WHERE published_at IS NULL") == [(0,)]


def keys_of(reader: TopicReader, topic: str) -> list[str]:
    """Model keys of the records read so far, as the records name them."""
    return [
        f"{d.record['tenant']}/{d.record['name']}/{d.record['version']}"
        for d in reader.records[topic]
    ]


def message_keys(settings: Settings, topic: str) -> list[tuple[bytes, str]]:
    """(Kafka message key, model key the record names) of every message now on ``topic``."""
    consumer = Consumer(consumer_config(settings, f"keys-{uuid.uuid4().hex[:8]}"))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        out: list[tuple[bytes, str]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 20
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is not None:
                    continue
                d = CODEC.decode(m.value())
                assert isinstance(d, Decoded)
                out.append(
                    (m.key(), f"{d.record['tenant']}/{d.record['name']}/{d.record['version']}")
                )
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
        assert len(done) == len(ends), "could not read model-updates to its end"
        return out
    finally:
        consumer.close()


def test_concurrent_promotions_leave_exactly_one_production(env: Env) -> None:
    with env.client("admin") as c:
        ids = [register(c, "race", f"v{i}")["id"] for i in range(6)]

    async def promote_all() -> list[int]:
        async with httpx.AsyncClient(
            base_url=env.base, headers={"X-API-Key": env.keys["admin"]}, timeout=30
        ) as ac:
            answers = await asyncio.gather(
                *(ac.post(f"/api/models/{i}/stage", json={"stage": "production"}) for i in ids)
            )
        return [r.status_code for r in answers]

    assert asyncio.run(promote_all()) == [200] * len(ids)
    rows = env.db(
        "SELECT stage, count(*) FROM model_versions WHERE name = 'race' GROUP BY stage ORDER BY 1"
    )
    assert rows == [("archived", 5), ("production", 1)]


def test_lineage_walks_ancestors_and_descendants(env: Env) -> None:
    with env.client("admin") as c:
        a = register(c, "lin", "a")
        b = register(c, "lin", "b", parent_id=a["id"])
        c1 = register(c, "lin", "c1", parent_id=b["id"])
        c2 = register(c, "lin-fork", "c2", parent_id=b["id"])
        d = register(c, "lin", "d", parent_id=c1["id"])
        mid = c.get(f"/api/models/{b['id']}/lineage").json()
        root = c.get(f"/api/models/{a['id']}/lineage").json()
        leaf = c.get(f"/api/models/{d['id']}/lineage").json()
        assert c.get("/api/models/999999/lineage").status_code == 404
    assert mid["model"]["id"] == b["id"]
    assert [m["version"] for m in mid["ancestors"]] == ["a"]
    assert [m["version"] for m in mid["descendants"]] == ["c1", "c2", "d"]
    assert root["ancestors"] == [] and [m["version"] for m in root["descendants"]] == [
        "b",
        "c1",
        "c2",
        "d",
    ]
    assert [m["version"] for m in leaf["ancestors"]] == ["c1", "b", "a"]
    assert leaf["descendants"] == []
    assert mid["descendants"][1]["name"] == "lin-fork", "lineage crosses model names"
    assert c2["parent_id"] == b["id"]


def test_review_resolution_404_200_409_and_the_label_on_labels_raw(env: Env) -> None:
    with env.client("admin") as c:
        m1 = register(c, "rev", "v1", abstain_threshold=0.6)
        m2 = register(c, "rev", "v2", abstain_threshold=0.6)
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    ids = {name: str(uuid.uuid4()) for name in ("old", "newer", "auto", "done")}
    rows = [
        ("newer", m2, "review", None, 5),
        ("old", m1, "review", None, 1),
        ("auto", m1, "auto", None, 2),
        ("done", m1, "resolved", "yes", 3),
    ]
    insert_predictions(
        env.settings,
        [
            {
                "event_id": ids[name],
                "tenant": "acme",
                "model_name": "rev",
                "model_version": m["version"],
                "model_version_id": m["id"],
                "event_time": t0 + timedelta(minutes=minute),
                "status": status,
                "ground_truth": truth,
                "confidence": 0.4,
            }
            for name, m, status, truth, minute in rows
        ],
    )
    reader = TopicReader(env.settings, [env.topics.labels_raw], CODEC)
    with env.client("reviewer") as c:
        queue = [
            p["event_id"] for p in c.get("/api/review-queue").json() if p["model_name"] == "rev"
        ]
        assert queue == [ids["old"], ids["newer"]], "oldest first, only status review"
        only_v2 = c.get("/api/review-queue", params={"model_version_id": m2["id"]}).json()
        assert [p["event_id"] for p in only_v2] == [ids["newer"]]
        paged = c.get("/api/review-queue", params={"limit": 1, "offset": 1}).json()
        assert [p["event_id"] for p in paged] == [ids["newer"]]

        assert c.post(f"/api/review/{uuid.uuid4()}", json={"ground_truth": "x"}).status_code == 404
        assert c.post("/api/review/12345", json={"ground_truth": "x"}).status_code == 404
        assert c.post(f"/api/review/{ids['old']}", json={"ground_truth": ""}).status_code == 422
        first = c.post(f"/api/review/{ids['old']}", json={"ground_truth": "no"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert (body["id"], body["status"], body["ground_truth"], body["correct"]) == (
            ids["old"],
            "resolved",
            "no",
            False,
        )
        assert body["model_version_id"] == m1["id"] and body["predicted_label"] == "yes"
        again = c.post(f"/api/review/{ids['old']}", json={"ground_truth": "yes"})
        assert again.status_code == 409 and "already resolved" in again.text
        assert c.post(f"/api/review/{ids['done']}", json={"ground_truth": "y"}).status_code == 409
        spot = c.post(f"/api/review/{ids['auto']}", json={"ground_truth": "yes"})
        assert spot.status_code == 200 and spot.json()["correct"] is True
        left = [
            p["event_id"] for p in c.get("/api/review-queue").json() if p["model_name"] == "rev"
        ]
        assert left == [ids["newer"]], "a resolved prediction leaves the queue at once"

    topic = env.topics.labels_raw
    reader.wait_for(
        lambda: {d.record["event_id"] for d in reader.records[topic]} >= {ids["old"], ids["auto"]},
        30,
        "the review labels on labels.raw",
    )
    labels = {d.record["event_id"]: d for d in reader.records[topic]}
    label = labels[ids["old"]]
    assert label.name == "Label"
    assert {k: label.record[k] for k in ("tenant", "model_name", "model_version", "source")} == {
        "tenant": "acme",
        "model_name": "rev",
        "model_version": "v1",
        "source": "review",
    }
    assert label.record["ground_truth"] == "no"
    assert len([d for d in reader.records[topic] if d.record["event_id"] == ids["old"]]) == 1
    reader.close()
    [(truth, key_id, resolved_ms)] = env.db(
        "SELECT ground_truth, api_key_id, "
        "(extract(epoch FROM date_trunc('milliseconds', resolved_at)) * 1000)::bigint "
        "FROM review_resolutions WHERE event_id = %s",
        ids["old"],
    )
    assert truth == "no" and key_id is not None
    assert label.record["label_time_ms"] == resolved_ms


def test_lists_by_model_find_predictions_recorded_before_the_version_was_registered(
    env: Env,
) -> None:
    t0 = datetime(2026, 11, 3, tzinfo=UTC)
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    other = str(uuid.uuid4())

    def row(event_id: str, version: str, mid: int | None, minute: int) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "tenant": "acme",
            "model_name": "early-bird",
            "model_version": version,
            "model_version_id": mid,
            "event_time": t0 + timedelta(minutes=minute),
            "status": "review",
            "ground_truth": None,
            "confidence": 0.3,
        }

    # Recorded while the version was unregistered: no model version id on the row.
    insert_predictions(env.settings, [row(early, "v1", None, 1), row(other, "v2", None, 3)])
    with env.client("admin") as c:
        m = register(c, "early-bird", "v1")
    insert_predictions(env.settings, [row(late, "v1", m["id"], 2)])
    with env.client("reviewer") as c:
        listed = c.get("/api/predictions", params={"model_version_id": m["id"]}).json()
        assert [p["event_id"] for p in listed] == [late, early], "newest first, v1 only"
        queued = c.get("/api/review-queue", params={"model_version_id": m["id"]}).json()
        assert [p["event_id"] for p in queued] == [early, late], "oldest first, v1 only"
        for path in ("/api/predictions", "/api/review-queue"):
            # an id that is not a version of this tenant: nothing, not every prediction
            assert c.get(path, params={"model_version_id": 987654321}).json() == []
