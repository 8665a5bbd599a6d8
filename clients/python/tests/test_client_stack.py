"""The client against the real stack: Kafka batches, the REST fallback, calibrator refresh
after an activation, segment maps applied as ``POST /api/calibrate`` applies them, the
router and its fallback.

Ingest, policy, recorder and router run as processes beside a gateway, on a topic
namespace, Redis prefix and database of this module's own.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from caliber_client import Caliber, DeliveryError, LocalCalibrator, RejectedError
from caliber_client.http import Api
from caliber_client.router import RouterClient
from confluent_kafka import Consumer, TopicPartition

from services.aggregator.refit import segment_map_record
from shared.contracts.batches import PredictionColumns, model_key
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.recalibration.artifact import artifact_version, canonical, make_artifact
from shared.recalibration.segments import SegmentFit, SegmentFitOptions
from shared.registry.segment_maps import SEGMENT_MAP, segment_map_key
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.polling import poll

pytestmark = pytest.mark.integration

TENANT = "acme"
UNREACHABLE = "127.0.0.1:1"
WAIT_S = 90


@dataclass
class Env:
    settings: Settings
    base: str
    admin: str
    producer: str
    models: dict[str, int]
    logs: Path

    def client(self, **kw: Any) -> Caliber:
        options: dict[str, Any] = {
            "api_key": self.producer,
            "tenant": TENANT,
            "kafka_bootstrap": self.settings.kafka_servers,
            "topic_namespace": self.settings.topic_namespace,
            "linger_ms": 20,
            **kw,
        }
        return Caliber(self.base, **options)

    def sql(self, query: str, *args: Any) -> Any:
        with psycopg.connect(self.settings.postgres_url) as conn:
            return conn.execute(query, args).fetchone()


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("client")
    keys = make_keys(
        isolated_settings, {"admin": (TENANT, ["admin"]), "producer": (TENANT, ["producer"])}
    )
    base, gateway = start_gateway(isolated_settings, logs)
    procs: list[Any] = [gateway]
    try:
        models = {}
        for version in ("kafka", "rest", "calibrated", "example", "segmented"):
            r = httpx.post(
                base + "/api/models",
                headers={"X-API-Key": keys["admin"]},
                json={"name": "digits", "version": version, "stage": "production",
                      "abstain_threshold": 0.7},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            models[version] = r.json()["id"]
        e = Env(isolated_settings, base, keys["admin"], keys["producer"], models, logs)
        poll(
            lambda: e.sql("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")[0],
            30,
            "the outbox to be published",
        )
        for name in ("ingest", "policy", "recorder", "router"):
            procs.append(start_service(name, isolated_settings, logs / f"{name}.log"))
        yield e
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def _recorded(env: Env, version: str) -> tuple[int, int, int]:
    """(rows, distinct event ids, labeled rows) of a model version in PostgreSQL."""
    row = env.sql(
        "SELECT count(*), count(DISTINCT event_id), count(ground_truth) FROM predictions "
        "WHERE tenant_id = %s AND model_name = 'digits' AND model_version = %s",
        TENANT,
        version,
    )
    return int(row[0]), int(row[1]), int(row[2])


def _raw_batches(env: Env) -> list[PredictionColumns]:
    topic = Topics.for_namespace(env.settings.topic_namespace).inference_raw
    consumer = Consumer(
        {"bootstrap.servers": env.settings.kafka_servers, "group.id": f"t-{uuid.uuid4().hex}",
         "enable.auto.commit": False}
    )  # fmt: skip
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    consumer.assign(parts)
    codec, out, seen = AvroCodec(), [], dict.fromkeys(ends, 0)
    deadline = time.monotonic() + 30
    while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for m in consumer.consume(500, timeout=1):
            if m.error() is None:
                seen[m.partition()] = m.offset() + 1
                decoded = codec.decode(m.value())
                if isinstance(decoded, Decoded) and decoded.name == "PredictionBatch":
                    out.append(PredictionColumns.from_record(decoded.record))
    consumer.close()
    return out


def test_kafka_batches_with_a_size_bound(env: Env) -> None:
    # a long linger: the batches are cut by size and by flush only (linger: test_client_batcher)
    with env.client(transport="kafka", max_events=100, linger_ms=60_000) as c:
        assert c.transport == "kafka"
        ids = [
            c.send("digits", "kafka", str(i % 3), 0.5 + (i % 50) / 100,
                   probabilities=None, features={"x": float(i)},
                   ground_truth=str(i % 3) if i % 2 else None)
            for i in range(250)
        ]  # fmt: skip
        c.flush()
        labels = ids[:20:2]  # unlabeled ones get a late label
        for eid in labels:
            c.label(eid, "0", model_name="digits", model_version="kafka")
        c.flush()
    batches = [b for b in _raw_batches(env) if b.model_version == "kafka"]
    # 250 events at most 100 per message: two full batches and the rest on flush
    assert sorted(len(b) for b in batches) == [50, 100, 100]
    assert [eid for b in batches for eid in b.event_ids] == ids
    assert all(b.tenant == TENANT and b.numeric_features["x"].size == len(b) for b in batches)
    poll(lambda: _recorded(env, "kafka") == (250, 250, 135), WAIT_S,
          "the 250 events (125 + 10 labeled) in PostgreSQL")  # fmt: skip


def test_kafka_delivery_errors_reach_the_caller(env: Env) -> None:
    seen: list[DeliveryError] = []
    with env.client(transport="kafka", kafka_config={"message.max.bytes": 2000},
                    on_error=seen.append) as c:  # fmt: skip
        eid = c.send("digits", "kafka", "1", 0.9, metadata={"note": "x" * 1000},
                     features={f"f{i}": float(i) for i in range(100)})  # fmt: skip
        with pytest.raises(DeliveryError) as caught:
            c.flush()
    assert caught.value.event_ids == [eid]
    assert seen and seen[0].event_ids == [eid]


def test_rest_fallback_without_kafka_never_doubles_an_event(env: Env) -> None:
    with env.client(kafka_bootstrap=UNREACHABLE, probe_seconds=1) as c:
        assert c.transport == "rest"
        ids = [
            c.send("digits", "rest", "1", 0.8, event_id=str(uuid.uuid4()),
                   ground_truth="1" if i < 30 else None)
            for i in range(120)
        ]  # fmt: skip
        c.flush()
        for eid in ids[100:]:
            c.label(eid, "0")
        c.flush()
    # a retry after a lost answer sends the same events again: they count once
    with env.client(transport="rest") as again:
        for eid in ids[:60]:
            again.send("digits", "rest", "1", 0.8, event_id=eid)
        again.flush()
    poll(lambda: _recorded(env, "rest") == (120, 120, 50), WAIT_S,
          "120 events (30 + 20 labeled) in PostgreSQL")  # fmt: skip
    time.sleep(3)  # anything doubled would land by now
    assert _recorded(env, "rest") == (120, 120, 50)


def test_rest_refusal_names_the_field(env: Env) -> None:
    with Api(env.base, env.producer, retries=0) as api, pytest.raises(RejectedError) as caught:
        api.request(
            "POST", "/api/labels", json={"labels": [{"event_id": "x", "ground_truth": "1"}]}
        )
    assert caught.value.status == 422 and "event_id" in str(caught.value.detail)


def _store_artifact(env: Env, model_id: int, beta: float) -> str:
    """Write a calibration set and an artifact as the calibrator's store does."""
    artifact = make_artifact("temperature", "confidence", {"beta": beta})
    version = artifact_version(artifact)
    set_hash = hashlib.sha256(version.encode()).hexdigest()
    with psycopg.connect(env.settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO calibration_sets (hash, tenant_id, model_version_id, manifest, rows_blob)"
            " VALUES (%s, %s, %s, '{}', '') ON CONFLICT DO NOTHING",
            (set_hash, TENANT, model_id),
        )
        conn.execute(
            "INSERT INTO calibration_artifacts (tenant_id, version, model_version_id, kind, "
            "artifact, set_hash) VALUES (%s, %s, %s, 'temperature', %s, %s)",
            (TENANT, version, model_id, canonical(artifact).decode(), set_hash),
        )
    return version


def _activate(env: Env, model_id: int, version: str) -> None:
    r = httpx.post(
        f"{env.base}/api/models/{model_id}/calibrator",
        headers={"X-API-Key": env.admin},
        json={"artifact_version": version},
    )
    assert r.status_code == 200, r.text


def test_calibrator_refresh_after_an_activation(env: Env) -> None:
    model_id = env.models["calibrated"]
    with (
        Caliber(env.base, env.admin, transport="rest") as reader,
        reader.calibrator(model_id, refresh_seconds=0.3) as cal,
    ):
        assert (cal.version, cal.threshold) == ("identity", 0.7)
        assert cal.calibrate(0.9) == 0.9
        assert cal.status(0.65) == "review" and cal.status(0.7) == "auto"
        version = _store_artifact(env, model_id, beta=0.5)
        _activate(env, model_id, version)
        poll(lambda: cal.version == version, 30, "the client to apply the activated map")
        # sigmoid(0.5 * ln 9) = 0.75, by hand
        assert cal.calibrate(0.9) == pytest.approx(0.75, abs=1e-12)
        _activate(env, model_id, "identity")  # a rollback reaches the client too
        poll(lambda: cal.version == "identity", 30, "the rollback to identity")
        assert cal.calibrate(0.9) == 0.9


def _publish_segment_maps(env: Env, version: str, fits: dict[str, SegmentFit]) -> None:
    """``SegmentMap`` records on ``<ns>.segment-maps``, as the aggregator's refit loop
    publishes them."""
    model = model_key(TENANT, "digits", version)
    topic = Topics.for_namespace(env.settings.topic_namespace).segment_maps
    producer, codec = make_producer(env.settings), AvroCodec()
    opts = SegmentFitOptions(clip_low=0.2, clip_high=0.8)
    for segment, fitted in fits.items():
        record = segment_map_record(model, segment, fitted, 60, opts, int(time.time() * 1000))
        key = segment_map_key(model, record["segment_key"], record["segment"])
        producer.produce(topic, codec.encode(SEGMENT_MAP, record), key)
    assert producer.flush(30) == 0


def _isotonic_fit(x: list[float], y: list[float]) -> SegmentFit:
    artifact = make_artifact("isotonic", "confidence", {"x": x, "y": y})
    return SegmentFit(artifact_version(artifact), artifact, 60)


def test_segment_maps_calibrate_as_the_gateway_does(env: Env) -> None:
    model_id, version = env.models["segmented"], "segmented"
    with env.client(transport="rest") as c:  # a recorded event names the key's feature
        c.send("digits", version, "1", 0.9, features={"sport": "golf"})
    poll(lambda: _recorded(env, version)[0] == 1, WAIT_S, "the event in PostgreSQL")
    r = httpx.put(f"{env.base}/api/models/{model_id}/segments",
                  headers={"X-API-Key": env.admin}, json={"segment_key": "sport"})  # fmt: skip
    assert r.status_code == 200, r.text
    active = _store_artifact(env, model_id, beta=2.0)
    _activate(env, model_id, active)
    golf, three = _isotonic_fit([0.5, 0.9], [0.0, 1.0]), _isotonic_fit([0.0, 1.0], [0.3, 0.6])
    failed = SegmentFit(None, None, 60, "too_few_samples: 60 < 100")  # falls back
    _publish_segment_maps(env, version, {"sport=golf": golf, "sport=3": three,
                                         "sport=polo": failed})  # fmt: skip
    with (
        Caliber(env.base, env.admin, transport="rest") as reader,
        reader.calibrator(model_id, refresh_seconds=0.3) as cal,
    ):
        want = {"golf": golf.version, "3": three.version}
        poll(lambda: cal.segment_versions == want and cal.version != "identity", 30,
              "the client to fetch the segment maps")  # fmt: skip
        assert cal.segment_key == "sport"
        events = [
            ({"sport": "golf"}, None, 0.7), ({"sport": "golf"}, None, 0.95),
            ({"sport": 3}, None, 0.5), ({"sport": 3.0}, {"sport": "golf"}, 0.9),
            (None, {"sport": "golf"}, 0.8), ({"sport": "polo"}, None, 0.9),
            ({"sport": ""}, {"sport": "golf"}, 0.9), (None, None, 0.6),
        ]  # fmt: skip
        features, metadata = [e[0] for e in events], [e[1] for e in events]
        ours = cal.calibrate_batch(
            [e[2] for e in events], segments=cal.segments(features, metadata)
        ).tolist()
        one_by_one = [cal.calibrate(c, features=f, metadata=m) for f, m, c in events]
    body = {"model_version_id": model_id, "events": [
        {"event_id": f"e{i}", "confidence": c, **({"features": f} if f else {}),
         **({"metadata": m} if m else {})}
        for i, (f, m, c) in enumerate(events)
    ]}  # fmt: skip

    def answered() -> Any:  # once the gateway's registry view has the activation too
        r = httpx.post(env.base + "/api/calibrate", headers={"X-API-Key": env.producer},
                       json=body, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        return results if results[-1]["calibrator_version"] == active else None

    results = poll(answered, 30, "POST /api/calibrate to apply the activated map")
    assert ours == one_by_one == [x["calibrated_confidence"] for x in results]
    assert [x["calibrator_version"] for x in results][:5] == [golf.version] * 2 + [
        three.version
    ] * 2 + [golf.version]
    # by hand: golf 0.7 → 0.5, 0.95 → 1.0 clipped to 0.8; "3" 0.5 → 0.45; 0.9 → 0.57;
    # no map (polo, empty, none): temperature 2 on c is c² / (c² + (1 - c)²)
    assert ours[:4] == pytest.approx([0.5, 0.8, 0.45, 0.57], abs=1e-12)
    assert ours[5:] == pytest.approx([0.81 / 0.82, 0.81 / 0.82, 0.36 / 0.52], abs=1e-12)
    r = httpx.get(f"{env.base}/api/models/{model_id}/segment-maps",
                  headers={"X-API-Key": env.admin})  # fmt: skip
    assert r.status_code == 200 and r.json()["segment_key"] == "sport"
    got = {m["segment"]: (m["calibrator_version"], m["artifact"], m["clip_low"], m["clip_high"])
           for m in r.json()["segment_maps"]}  # fmt: skip
    assert got == {"golf": (golf.version, golf.artifact, 0.2, 0.8),
                   "3": (three.version, three.artifact, 0.2, 0.8)}  # fmt: skip


def test_segment_maps_of_an_unknown_or_other_tenants_version_are_404(env: Env) -> None:
    keys = make_keys(env.settings, {"other": ("globex", ["viewer"])})
    model_id = env.models["segmented"]
    for key, path in ((keys["other"], model_id), (env.admin, 987654321)):
        r = httpx.get(f"{env.base}/api/models/{path}/segment-maps", headers={"X-API-Key": key})
        assert r.status_code == 404, r.text
    r = httpx.get(f"{env.base}/api/models/{model_id}/segment-maps")
    assert r.status_code == 401


def test_calibrator_falls_back_to_the_raw_confidence(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="caliber_client"),
        Api(f"http://{UNREACHABLE}", retries=0, timeout=1) as api,
        LocalCalibrator(api, 7, refresh_seconds=60) as local,
    ):
        assert local.version is None and local.calibrate(0.9) == 0.9
    assert "not refreshed" in caplog.text and "raw confidence" in caplog.text


def test_router_decide_force_report_and_late_outcome(env: Env) -> None:
    with Api(env.base, env.producer) as api:
        chosen = _route(RouterClient(api))
    # the chosen decision counted once, whatever was sent after it; the forced one apart
    if chosen != "clf/v2":
        poll(lambda: _outcomes(env, chosen) == (1, 0), 30, "one counted outcome")
        poll(lambda: _outcomes(env, "clf/v2") == (0, 1), 30, "the forced outcome")
    else:
        poll(lambda: _outcomes(env, "clf/v2") == (1, 1), 30, "one outcome of each kind")


def _route(router: RouterClient) -> str:
    """Decide, force, report, report again and late; the path of the chosen decision."""
    d = router.decide("triage", ["clf/v1", "clf/v2"])
    assert d.decision_id and d.path in ("clf/v1", "clf/v2") and not d.local
    forced = router.force("triage", ["clf/v1", "clf/v2"], "clf/v2")
    assert (forced.path, forced.forced) == ("clf/v2", True)

    def reported() -> bool:  # the router worker records the decision within moments
        try:
            return router.report(d, success=True)
        except RejectedError as exc:
            assert exc.status == 404
            return False

    assert poll(reported, 30, "the outcome to be accepted")
    # once the router has counted it, another outcome of that decision is refused (409)
    poll(lambda: router.report(str(d.decision_id), success=False) is False, 30, "the 409")
    # a late outcome needs only the decision id
    assert poll(lambda: router.report(str(forced.decision_id), score=0.25), 30, "late outcome")
    return d.path


def _outcomes(env: Env, path: str) -> tuple[int, int]:
    r = httpx.get(
        env.base + "/api/route/policy", params={"goal": "triage"},
        headers={"X-API-Key": env.admin},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    row = next(p for p in r.json()["paths"] if p["path"] == path)
    return row["outcomes"], row["forced_outcomes"]


def test_router_fallback_when_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    with (
        Api(f"http://{UNREACHABLE}", retries=0) as api,
        caplog.at_level(logging.WARNING, logger="caliber_client"),
    ):
        router = RouterClient(api, timeout=0.5)
        d = router.decide("triage", ["clf/v1", "clf/v2"])
        assert (d.path, d.fallback, d.local, d.decision_id) == ("clf/v1", True, True, None)
        assert "router unreachable" in caplog.text
        assert router.report(d, success=True) is False
        forced = router.force("triage", ["clf/v1", "clf/v2"], "clf/v2")
        assert (forced.path, forced.forced, forced.local) == ("clf/v2", True, True)
