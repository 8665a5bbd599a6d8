"""The drift worker on the real stack: shifts at known events are detected within one
window, a long stationary run raises nothing, and the gateway serves scores and alerts.

Setup: a 60 s event-time window in 10 s buckets, events 10 ms apart (100 per event
second), so the window holds 5,001–6,000 events; the reference is each model version's first
5,000 events; scores are evaluated every 0.25 s. Bound: the alert for a shifted feature comes
within ONE WINDOW (6,000 events) of the shift. Observed on the 2-core machine: 3,000–3,500
events for a one-sd mean shift (PSI crosses 0.2 when ~47 % of the window is shifted), about
2,000 for the categorical and the label-mix shifts (Cohen's w crosses 0.3), each resolved to
the ~500 events an evaluation round lets pass. x0 returns to normal two windows after its
shift: its recovery (``resolved``) is recorded within one window too (observed ~4,000
events: PSI must fall below 0.8 × 0.2). The 200,000-event stationary run: 0 false alarms,
its highest score at 0.13–0.19 of its threshold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.drift_io import STEP_MS, Scenario, batches, send
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.kafka_io import TopicReader

WINDOW_EVENTS = 6_000
REFERENCE_EVENTS = 5_000
SHIFT_AT = 20_000
SHIFT_BACK = SHIFT_AT + 2 * WINDOW_EVENTS
"""x0 returns to its reference distribution here: its recovery is recorded."""
WORKER_ENV = {
    "CALIBER_DRIFT_WINDOW_SECONDS": "60",
    "CALIBER_DRIFT_BUCKET_SECONDS": "10",
    "CALIBER_DRIFT_EVAL_SECONDS": "0.25",
    "CALIBER_DRIFT_REFERENCE_EVENTS": str(REFERENCE_EVENTS),
}


@pytest.fixture(scope="module")
def services(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("drift")
    settings = isolated_settings
    drift = start_service("drift", settings, logs / "drift.log", **WORKER_ENV)
    recorder = start_service("recorder", settings, logs / "recorder.log")
    keys = make_keys(
        settings,
        {
            "admin": ("default", ["admin"]),
            "viewer": ("default", ["viewer"]),
            "other": ("other", ["admin"]),
        },
    )
    base, gateway = start_gateway(settings, logs)
    yield {"settings": settings, "base": base, "keys": keys, "workers": [drift, recorder]}
    for proc in (drift, recorder, gateway):
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(30)  # type: ignore[attr-defined]


def register(svc: dict[str, Any], name: str) -> int:
    r = httpx.post(
        f"{svc['base']}/api/models",
        json={"name": name, "version": "v1"},
        headers={"X-API-Key": svc["keys"]["admin"]},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def drift_alerts(reader: TopicReader, topic: str, model: str) -> list[dict[str, Any]]:
    return [
        d.record
        for d in reader.records[topic]
        if isinstance(d, Decoded)
        and d.record["kind"] == "drift"
        and d.record["model_name"] == model
    ]


def test_shifts_are_detected_within_one_window(services: dict[str, Any]) -> None:
    settings: Settings = services["settings"]
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    reader = TopicReader(settings, [topics.alerts], codec)
    scenarios = {
        "x0": Scenario("numshift", shift_at=SHIFT_AT, shift="numeric", shift_until=SHIFT_BACK),
        "c0": Scenario("catshift", shift_at=SHIFT_AT, shift="categorical"),
        "__predicted_label__": Scenario("labelshift", shift_at=SHIFT_AT, shift="labels"),
    }
    for s in scenarios.values():
        s.model_version_id = register(services, s.name)
    total = SHIFT_BACK + 2 * WINDOW_EVENTS
    streams = [batches(s, total, seed=i) for i, s in enumerate(scenarios.values())]
    producer = make_producer(settings)
    # Paced at 2,000 events/s per model version, so an evaluation every 0.25 s sees the
    # window move by about 500 events: the detection point is resolved to that.
    for step in zip(*streams, strict=True):
        started = time.monotonic()
        for cols in step:
            send(producer, topics.predictions, codec, cols)
        producer.flush(10)
        time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))

    def detected() -> bool:
        recovered = any(
            a["severity"] == "resolved" for a in drift_alerts(reader, topics.alerts, "numshift")
        )
        return recovered and all(
            any(a["feature"] == f for a in drift_alerts(reader, topics.alerts, s.name))
            for f, s in scenarios.items()
        )

    reader.wait_for(detected, 60, "a drift alert per shifted feature", services["workers"])
    reader.poll(2.0)
    # x0 drifts once, then recovers once it is back: one alert and its resolution.
    resolved = drift_alerts(reader, topics.alerts, "numshift")[-1]
    assert resolved["severity"] == "resolved" and resolved["feature"] == "x0"
    assert resolved["value"] < 0.8 * resolved["threshold"]
    back = int(resolved["details"]["window_end_ms"]) - scenarios["x0"].time_of(SHIFT_BACK)
    assert 0 < back // STEP_MS <= WINDOW_EVENTS
    print(f"numshift: x0 recovered {back // STEP_MS} events after the shift ended")
    for feature, s in scenarios.items():
        alerts = [
            a for a in drift_alerts(reader, topics.alerts, s.name) if a["severity"] != "resolved"
        ]
        assert [a["feature"] for a in alerts] == [feature], f"{s.name}: {alerts}"
        (a,) = alerts
        after = (int(a["details"]["window_end_ms"]) - s.time_of(SHIFT_AT)) // STEP_MS
        assert 0 < after <= WINDOW_EVENTS, f"{s.name}: alert {after} events after the shift"
        assert a["severity"] in ("warning", "critical")
        assert a["value"] >= a["threshold"]
        assert a["method"] == ("psi" if feature == "x0" else "chi_squared")
        assert a["model_version_id"] == s.model_version_id
        assert a["n_samples"] >= 500 and a["reference_version"]
        print(f"{s.name}: {feature} alerted {after} events after the shift ({a['value']:.3f})")
    reader.close()

    # The gateway: current scores of every feature, the alerts, tenant isolation.
    base, keys = services["base"], services["keys"]
    viewer = {"X-API-Key": keys["viewer"]}
    mid = scenarios["x0"].model_version_id
    cur = httpx.get(f"{base}/api/drift", params={"model_version_id": mid}, headers=viewer).json()
    by_feature = {f["feature"]: f for f in cur["features"]}
    expected = {"__confidence__", "__predicted_label__", "x0", "x1", "x2", "x3", "x4", "c0", "c1"}
    assert set(by_feature) == expected
    assert by_feature["x0"]["severity"] is None and not by_feature["x0"]["alerting"]  # recovered
    assert by_feature["x1"]["severity"] is None
    assert set(by_feature["x1"]["scores"]) == {"psi", "js_distance", "ks"}
    assert set(by_feature["c0"]["scores"]) == {"chi_squared"} and "p_value" in by_feature["c0"]
    assert 5_000 <= by_feature["x1"]["n_samples"] <= WINDOW_EVENTS
    assert cur["reference_source"] == "window" and cur["window"] == "1m"
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < 4:
        rows = httpx.get(f"{base}/api/drift-alerts", headers=viewer).json()
        time.sleep(0.5)
    assert {(r["model_version_id"], r["feature"]) for r in rows} == {
        (s.model_version_id, f) for f, s in scenarios.items()
    }
    assert sorted(r["severity"] == "resolved" for r in rows) == [False, False, False, True]
    assert {
        "model_version_id",
        "feature",
        "drift_score",
        "threshold",
        "severity",
        "created_at",
        "method",
        "window",
        "reference_version",
    } <= set(rows[0])
    other = {"X-API-Key": keys["other"]}
    assert httpx.get(f"{base}/api/drift-alerts", headers=other).json() == []
    r = httpx.get(f"{base}/api/drift", params={"model_version_id": mid}, headers=other)
    assert r.status_code == 404


def test_a_long_stationary_run_raises_no_alert(services: dict[str, Any]) -> None:
    settings: Settings = services["settings"]
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    total = 200_000
    s = Scenario("stationary", numeric=10, categorical=3)
    s.model_version_id = register(services, s.name)
    producer = make_producer(settings)
    started = time.monotonic()
    for cols in batches(s, total, seed=11):
        send(producer, topics.predictions, codec, cols)
    producer.flush(30)
    base, viewer = services["base"], {"X-API-Key": services["keys"]["viewer"]}
    last_ms = s.time_of(total - 1)
    deadline = time.monotonic() + 120
    cur: dict[str, Any] = {}
    while time.monotonic() < deadline:
        cur = httpx.get(
            f"{base}/api/drift", params={"model_version_id": s.model_version_id}, headers=viewer
        ).json()
        if cur.get("window_end_ms") == last_ms:
            break
        time.sleep(0.5)
    assert cur.get("window_end_ms") == last_ms, f"not all events scored in time: {cur}"
    elapsed = time.monotonic() - started
    reader = TopicReader(settings, [topics.alerts], codec)
    reader.poll(3.0)
    false_alarms = drift_alerts(reader, topics.alerts, s.name)
    reader.close()
    worst = max(f["drift_score"] / f["threshold"] for f in cur["features"])
    print(
        f"stationary: {total} events in {elapsed:.1f} s, {len(false_alarms)} false alarms, "
        f"highest score/threshold {worst:.3f}"
    )
    assert false_alarms == []
    # The window holds the last 5,001–6,000 events (6 buckets of 1,000 events).
    n = {f["n_samples"] for f in cur["features"]}
    assert len(n) == 1 and 5_000 < n.pop() <= WINDOW_EVENTS


def test_an_uploaded_reference_replaces_the_window_profile(services: dict[str, Any]) -> None:
    settings: Settings = services["settings"]
    topics = Topics.for_namespace(settings.topic_namespace)
    codec = AvroCodec()
    base, keys = services["base"], services["keys"]
    admin = {"X-API-Key": keys["admin"]}
    s = Scenario("uploaded", numeric=2, categorical=1)
    s.model_version_id = register(services, s.name)
    ref = next(batches(s, 2_000, size=2_000, seed=21))
    events = [
        {
            "confidence": float(ref.confidences[i]),
            "predicted_label": ref.predicted_labels[i],
            "features": {
                "x0": float(ref.numeric_features["x0"][i]),
                "x1": float(ref.numeric_features["x1"][i]),
                "c0": ref.categorical_features["c0"][i],
            },
        }
        for i in range(len(ref))
    ]
    body = {"model_version_id": s.model_version_id, "events": events}
    denied = httpx.post(
        f"{base}/api/drift/reference", json=body, headers={"X-API-Key": keys["viewer"]}
    )
    assert denied.status_code == 403
    other = httpx.post(
        f"{base}/api/drift/reference", json=body, headers={"X-API-Key": keys["other"]}
    )
    assert other.status_code == 404
    up = httpx.post(f"{base}/api/drift/reference", json=body, headers=admin, timeout=30)
    assert up.status_code == 201, up.text
    version = up.json()["reference_version"]
    assert up.json()["features"] == ["c0", "x0", "x1"] and up.json()["n_samples"] == 2_000
    r = httpx.put(
        f"{base}/api/drift/thresholds",
        json={"model_version_id": s.model_version_id, "thresholds": {"x0": 0.5}},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["thresholds"] == {"x0": 0.5}
    # The worker installs the upload within an evaluation, so no reference window is taken:
    # the first events are scored against the upload.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{base}/api/drift/reference",
            params={"model_version_id": s.model_version_id},
            headers=admin,
        )
        if got.status_code == 200:
            break
        time.sleep(0.3)
    assert got.status_code == 200 and got.json()["reference_version"] == version
    assert got.json()["source"] == "upload"
    producer = make_producer(settings)
    for cols in batches(s, 3_000, seed=22):
        send(producer, topics.predictions, codec, cols)
    producer.flush(10)
    deadline = time.monotonic() + 30
    cur: dict[str, Any] = {}
    while time.monotonic() < deadline:
        cur = httpx.get(
            f"{base}/api/drift", params={"model_version_id": s.model_version_id}, headers=admin
        ).json()
        if cur.get("window_end_ms") == s.time_of(2_999):
            break
        time.sleep(0.3)
    assert cur["reference_version"] == version and cur["reference_source"] == "upload"
    by_feature = {f["feature"]: f for f in cur["features"]}
    assert by_feature["x0"]["threshold"] == 0.5 and by_feature["x1"]["threshold"] == 0.2
    assert by_feature["x0"]["n_samples"] == 3_000  # every event scored, none kept as reference


def test_an_undecodable_message_becomes_a_dead_letter(services: dict[str, Any]) -> None:
    settings = services["settings"]
    topics = Topics.for_namespace(settings.topic_namespace)
    reader = TopicReader(settings, [topics.deadletter], AvroCodec())
    producer = make_producer(settings)
    garbled = b"\xc3\x01" + bytes(8) + b"body"  # framed, but no schema has that fingerprint
    producer.produce(topics.predictions, garbled, b"default/garbled/v1")
    assert producer.flush(10) == 0
    try:
        reader.wait_for(
            lambda: any(d.record["service"] == "drift" for d in reader.records[topics.deadletter]),
            60,
            "the drift worker's dead letter",
            services["workers"],
        )
        (letter,) = [
            d.record for d in reader.records[topics.deadletter] if d.record["service"] == "drift"
        ]
        assert letter["source_topic"] == topics.predictions and letter["raw"] == garbled
        assert letter["error_code"] == "unknown_schema"
    finally:
        reader.close()
