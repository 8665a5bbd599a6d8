"""Ingest → policy → recorder on the real stack: decisions, the review queue, labels.

Replays and the recorder's other guarantees are tested on the recorder alone in
test_recorder.py; the policy's in test_policy.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.kafka_io import TopicReader
from tests.unit.test_validation import event

CODEC = AvroCodec()
THRESHOLDS = {("acme", "fraud", "v1"): 0.6, ("acme", "fraud", "v2"): 0.8}


def _register(settings: Settings) -> None:
    topics = Topics.for_namespace(settings.topic_namespace)
    producer = make_producer(settings)
    now = int(time.time() * 1000)
    for i, ((tenant, name, version), threshold) in enumerate(THRESHOLDS.items(), start=1):
        record = {
            "id": i,
            "tenant": tenant,
            "name": name,
            "version": version,
            "stage": "production" if i == 1 else "staging",
            "parent_id": None if i == 1 else 1,
            "abstain_threshold": threshold,
            "calibrator_version": "identity",
            "calibrator": None,
            "created_at_ms": now,
            "updated_at_ms": now,
        }
        producer.produce(
            topics.model_updates,
            CODEC.encode("ModelVersion", record),
            model_key(tenant, name, version).encode(),
        )
    assert producer.flush(10) == 0


def _events() -> list[dict[str, Any]]:
    out = []
    for version in ("v1", "v2", "v9"):  # v9 is not registered: default threshold 0.70
        for conf in (0.55, 0.65, 0.7, 0.75, 0.85, 0.95):
            out.append(
                event(
                    model_version=version,
                    confidence=conf,
                    probabilities={"yes": conf, "no": round(1 - conf, 10)},
                )
            )
    return out


def _expected_status(e: dict[str, Any]) -> str:
    threshold = THRESHOLDS.get((e["tenant"], e["model_name"], e["model_version"]), 0.70)
    return "review" if e["confidence"] < threshold else "auto"


@pytest.fixture(scope="module")
def running(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    _register(isolated_settings)
    logs = tmp_path_factory.mktemp("logs")
    workers = [
        start_service(name, isolated_settings, logs / f"{name}.log")
        for name in ("ingest", "policy", "recorder")
    ]
    yield isolated_settings
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(30)


def _send(settings: Settings, topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
    producer = make_producer(settings)
    for name, rec in records:
        producer.produce(topic, CODEC.encode(name, rec))
    assert producer.flush(10) == 0


def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.postgres_url) as conn:
        return conn.execute(sql).fetchall()


def _wait_rows(
    settings: Settings, sql: str, expect: int, timeout: float = 60
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = _rows(settings, sql)
        if len(rows) >= expect:
            return rows
        time.sleep(0.3)
    raise AssertionError(f"expected {expect} rows from {sql!r}, found {len(rows)}")


def test_decisions_follow_each_models_threshold(running: Settings) -> None:
    topics = Topics.for_namespace(running.topic_namespace)
    events = _events()
    reader = TopicReader(running, [topics.decisions], CODEC)
    _send(running, topics.inference_raw, [("InferenceEvent", e) for e in events])
    reader.wait_for(
        lambda: (
            sum(len(d.record["calibrated_confidences"]) for d in reader.records[topics.decisions])
            >= len(events)
        ),
        60,
        "a decision for every event",
    )
    decided: dict[str, tuple[str, float, str]] = {}
    for d in reader.records[topics.decisions]:
        rec = d.record
        for eid, status in zip(rec["predictions"]["event_ids"], rec["statuses"], strict=True):
            decided[eid] = (status, rec["threshold"], rec["threshold_source"])
    reader.close()
    assert len(decided) == len(events)
    for e in events:
        status, threshold, source = decided[e["event_id"]]
        assert status == _expected_status(e), e
        registered = (e["tenant"], e["model_name"], e["model_version"]) in THRESHOLDS
        assert source == ("registry" if registered else "default")
        assert threshold == THRESHOLDS.get((e["tenant"], e["model_name"], e["model_version"]), 0.70)

    ids = "','".join(e["event_id"] for e in events)
    rows = _wait_rows(
        running,
        f"SELECT event_id::text, status FROM predictions WHERE event_id IN ('{ids}')",
        len(events),
    )
    review = {eid for eid, status in rows if status == "review"}
    assert review == {e["event_id"] for e in events if _expected_status(e) == "review"}
    # At 0.7 exactly, the default threshold auto-accepts (>= threshold).
    v1_ids = _rows(
        running,
        "SELECT model_version_id FROM predictions "
        f"WHERE model_version = 'v1' AND event_id IN ('{ids}')",
    )
    assert {r[0] for r in v1_ids} == {1}


def test_labels_resolve_predictions_in_any_order(running: Settings) -> None:
    topics = Topics.for_namespace(running.topic_namespace)
    early, late = (
        event(confidence=0.9, probabilities=None),
        event(confidence=0.5, probabilities=None),
    )
    now = int(time.time() * 1000)

    def label(e: dict[str, Any], truth: str) -> tuple[str, dict[str, Any]]:
        return (
            "Label",
            {
                "event_id": e["event_id"],
                "tenant": "acme",
                "model_name": None,
                "model_version": None,
                "ground_truth": truth,
                "source": "feed",
                "label_time_ms": now,
            },
        )

    # The label of `early` arrives before its prediction; `late` is labelled afterwards.
    _send(running, topics.labels_raw, [label(early, "yes")])
    _wait_rows(running, f"SELECT 1 FROM pending_labels WHERE event_id = '{early['event_id']}'", 1)
    _send(running, topics.inference_raw, [("InferenceEvent", early), ("InferenceEvent", late)])
    _wait_rows(running, f"SELECT 1 FROM predictions WHERE event_id = '{late['event_id']}'", 1)
    _send(running, topics.labels_raw, [label(late, "maybe")])
    rows = _wait_rows(
        running,
        "SELECT event_id::text, status, ground_truth, correct, label_source FROM predictions "
        f"WHERE event_id IN ('{early['event_id']}', '{late['event_id']}') "
        "AND ground_truth IS NOT NULL",
        2,
    )
    got = {r[0]: r[1:] for r in rows}
    # `early` was auto-accepted: its label does not make it "resolved" (it was never reviewed).
    assert got[early["event_id"]] == ("auto", "yes", True, "feed")
    assert got[late["event_id"]] == ("resolved", "maybe", False, "feed")
    assert (
        _rows(running, f"SELECT 1 FROM pending_labels WHERE event_id = '{early['event_id']}'") == []
    )


def test_ground_truth_on_the_event_resolves_its_prediction(running: Settings) -> None:
    topics = Topics.for_namespace(running.topic_namespace)
    right = event(model_version="v2", confidence=0.5, probabilities=None, ground_truth="yes")
    wrong = event(model_version="v2", confidence=0.9, probabilities=None, ground_truth="no")
    _send(running, topics.inference_raw, [("InferenceEvent", right), ("InferenceEvent", wrong)])
    rows = _wait_rows(
        running,
        "SELECT event_id::text, status, ground_truth, correct, label_source FROM predictions "
        f"WHERE event_id IN ('{right['event_id']}', '{wrong['event_id']}') "
        "AND ground_truth IS NOT NULL",
        2,
    )
    got = {r[0]: r[1:] for r in rows}
    assert got[right["event_id"]] == ("resolved", "yes", True, "event")
    assert got[wrong["event_id"]] == ("auto", "no", False, "event")  # auto-accepted: stays auto
