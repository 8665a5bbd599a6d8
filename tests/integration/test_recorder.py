"""The recorder on the real stack: decisions, labels and alerts into PostgreSQL, idempotently.

Records are produced straight to the recorder's input topics; every wait is for the
recorder's consumer group to commit past what was produced (offsets are committed only
after the PostgreSQL transaction), so each assertion sees a settled database.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from services.policy.processing import decide
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from tests.integration.conftest import start_service
from tests.integration.kafka_io import TopicReader
from tests.integration.pipeline_io import CODEC, dump, produce, rows, wait_committed

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Recorder:
    def __init__(self, settings: Settings, worker: subprocess.Popen[bytes]) -> None:
        self.settings = settings
        self.worker = worker
        self.topics = Topics.for_namespace(settings.topic_namespace)
        self.sent = 0
        """Messages produced to the recorder's input topics so far."""

    def send(self, records: list[tuple[str, str, dict[str, Any], str | None]]) -> None:
        produce(self.settings, records)
        self.sent += len(records)
        self.settle()

    def settle(self) -> None:
        wait_committed(
            self.settings,
            f"{self.settings.topic_namespace}-recorder",
            [self.topics.decisions, self.topics.labels, self.topics.alerts],
            workers=[self.worker],
        )

    def decision(
        self,
        confidences: list[float],
        threshold: float,
        version: str = "v1",
        t: int = T0,
        tenant: str = "acme",
    ) -> tuple[str, str, dict[str, Any], str]:
        n = len(confidences)
        cols = PredictionColumns(
            tenant=tenant,
            model_name="fraud",
            model_version=version,
            model_version_id=1 if version == "v1" else None,
            event_ids=[str(uuid.uuid4()) for _ in range(n)],
            event_time_ms=np.arange(n, dtype=np.int64) * 1_000 + t,
            predicted_labels=["yes"] * n,
            confidences=np.asarray(confidences),
            class_labels=["yes", "no"],
            probabilities=np.array([[c, round(1 - c, 10)] for c in confidences]).reshape(n, 2),
            numeric_features={"amount": np.linspace(1.0, 2.0, n)},
        )
        d = decide(cols, threshold, IDENTITY, "registry", t + 50_000)
        return (self.topics.decisions, "DecisionBatch", d.to_record(), cols.key)

    def labels(
        self,
        event_ids: list[str],
        truths: list[str],
        source: str,
        t: int = T0 + 90_000,
        tenant: str = "acme",
    ) -> tuple[str, str, dict[str, Any], None]:
        n = len(event_ids)
        lbl = LabelColumns(
            tenant=tenant,
            model_name=None,
            model_version=None,
            event_ids=event_ids,
            ground_truths=truths,
            sources=[source] * n,
            label_time_ms=np.arange(n, dtype=np.int64) + t,
        )
        return (self.topics.labels, "LabelBatch", lbl.to_record(), None)


@pytest.fixture(scope="module")
def recorder(
    isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorder]:
    log = tmp_path_factory.mktemp("logs") / "recorder.log"
    worker = start_service("recorder", isolated_settings, log)
    try:
        yield Recorder(isolated_settings, worker)
    finally:
        worker.terminate()
        worker.wait(30)


def ids_of(record: tuple[str, str, dict[str, Any], Any]) -> list[str]:
    return list(record[2]["predictions"]["event_ids"])


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def test_decisions_become_rows_with_their_status_and_the_messages_times(
    recorder: Recorder,
) -> None:
    confidences = [0.3, 0.59, 0.6, 0.61, 0.95]
    d = recorder.decision(confidences, threshold=0.6)
    recorder.send([d])
    got = rows(
        recorder.settings,
        "SELECT event_id::text, status, confidence, calibrated_confidence, threshold, "
        "calibrator_version, model_version_id, event_time, decided_at, created_at, "
        "probabilities, features, ground_truth, correct FROM predictions "
        "WHERE event_id = ANY(%s::uuid[]) ORDER BY event_time",
        ids_of(d),
    )
    assert [r[0] for r in got] == ids_of(d)
    assert [r[1] for r in got] == ["review", "review", "auto", "auto", "auto"]
    assert [r[2] for r in got] == confidences and [r[3] for r in got] == confidences
    assert {(r[4], r[5], r[6]) for r in got} == {(0.6, "identity", 1)}
    assert [r[7] for r in got] == [ts(T0 + i * 1_000) for i in range(5)]
    # Every timestamp comes from the message, so a replay or a rebuild writes the same bytes.
    assert {(r[8], r[9]) for r in got} == {(ts(T0 + 50_000), ts(T0 + 50_000))}
    assert got[0][10] == {"yes": 0.3, "no": 0.7} and got[0][11] == {"amount": 1.0}
    assert {(r[12], r[13]) for r in got} == {(None, None)}


def test_a_label_before_its_prediction_waits_then_resolves_it(recorder: Recorder) -> None:
    d = recorder.decision([0.4, 0.9], threshold=0.6)
    early, other = ids_of(d)
    recorder.send([recorder.labels([early], ["no"], "feed")])
    assert rows(recorder.settings, "SELECT 1 FROM predictions WHERE event_id = %s", early) == []
    assert rows(
        recorder.settings,
        "SELECT ground_truth, source, label_time FROM pending_labels WHERE event_id = %s",
        early,
    ) == [("no", "feed", ts(T0 + 90_000))]

    recorder.send([d])
    got = dict(
        (r[0], r[1:])
        for r in rows(
            recorder.settings,
            "SELECT event_id::text, status, ground_truth, correct, label_source, labeled_at, "
            "resolved_at FROM predictions WHERE event_id = ANY(%s::uuid[])",
            [early, other],
        )
    )
    labelled_at = ts(T0 + 90_000)
    assert got[early] == ("resolved", "no", False, "feed", labelled_at, labelled_at)
    assert got[other] == ("auto", None, None, None, None, None)
    assert rows(recorder.settings, "SELECT 1 FROM pending_labels WHERE event_id = %s", early) == []


def test_labels_from_the_event_and_from_a_review_resolve_their_predictions(
    recorder: Recorder,
) -> None:
    d = recorder.decision([0.95, 0.45], threshold=0.6)
    on_event, reviewed = ids_of(d)
    recorder.send([d])
    recorder.send(
        [
            recorder.labels([on_event], ["yes"], "event"),
            recorder.labels([reviewed], ["no"], "review"),
        ]
    )
    got = rows(
        recorder.settings,
        "SELECT status, ground_truth, correct, label_source FROM predictions "
        "WHERE event_id = ANY(%s::uuid[]) ORDER BY event_time",
        [on_event, reviewed],
    )
    # The auto-accepted one stays auto (its label does not make it "reviewed"); the
    # withheld one is resolved by its review.
    assert got == [("auto", "yes", True, "event"), ("resolved", "no", False, "review")]


def test_two_tenants_may_use_the_same_event_ids(recorder: Recorder) -> None:
    """Each tenant's prediction is its own row; a label resolves its own tenant's only, and
    waits for its own tenant's prediction even when another tenant has one of that id."""
    acme = recorder.decision([0.9, 0.4], threshold=0.6)
    both, only_acme = ids_of(acme)
    globex = recorder.decision([0.5, 0.5], threshold=0.6, tenant="globex")
    globex[2]["predictions"]["event_ids"] = [both, str(uuid.uuid4())]
    recorder.send([acme, globex])
    recorder.send(
        [
            recorder.labels([both], ["no"], "feed", tenant="globex"),
            recorder.labels([only_acme], ["yes"], "feed", tenant="globex"),
        ]
    )
    got = rows(
        recorder.settings,
        "SELECT tenant_id, status, ground_truth, confidence FROM predictions "
        "WHERE event_id = ANY(%s::uuid[]) ORDER BY event_id = %s, tenant_id",
        [both, only_acme],
        only_acme,
    )
    assert got == [
        ("acme", "auto", None, 0.9),
        ("globex", "resolved", "no", 0.5),
        ("acme", "review", None, 0.4),
    ]
    assert rows(
        recorder.settings,
        "SELECT tenant_id, ground_truth FROM pending_labels WHERE event_id = %s",
        only_acme,
    ) == [("globex", "yes")]
    # Globex's prediction of that id comes at last and takes its waiting label.
    late = recorder.decision([0.7], threshold=0.6, tenant="globex")
    late[2]["predictions"]["event_ids"] = [only_acme]
    recorder.send([late])
    assert rows(
        recorder.settings,
        "SELECT tenant_id, status, ground_truth FROM predictions WHERE event_id = %s "
        "ORDER BY tenant_id",
        only_acme,
    ) == [("acme", "review", None), ("globex", "auto", "yes")]  # auto: labelled, not reviewed
    assert (
        rows(recorder.settings, "SELECT 1 FROM pending_labels WHERE event_id = %s", only_acme) == []
    )


def test_status_never_goes_backwards(recorder: Recorder) -> None:
    d = recorder.decision([0.3], threshold=0.6)
    (eid,) = ids_of(d)
    recorder.send([d, recorder.labels([eid], ["yes"], "review")])
    query = (
        "SELECT status, ground_truth, correct, label_source, labeled_at, decided_at "
        "FROM predictions WHERE event_id = %s"
    )
    before = rows(recorder.settings, query, eid)
    assert before[0][:4] == ("resolved", "yes", True, "review")
    # The decision again (status review, a later decided_at) and a second, different label.
    again = recorder.decision([0.3], threshold=0.6, t=T0 + 600_000)
    again[2]["predictions"]["event_ids"] = [eid]
    recorder.send([again, recorder.labels([eid], ["no"], "feed", t=T0 + 700_000)])
    assert rows(recorder.settings, query, eid) == before


def test_alerts_are_stored_once_by_alert_id(recorder: Recorder) -> None:
    alert = {
        "alert_id": str(uuid.uuid4()), "tenant": "acme", "kind": "calibration",
        "severity": "warning", "model_name": "fraud", "model_version": "v1",
        "model_version_id": 1, "metric": "ece", "feature": None, "method": None,
        "value": 0.09, "threshold": 0.05, "window": "1h", "reference_version": None,
        "n_samples": 400, "created_at_ms": T0 + 5_000, "details": {"bins": "10"},
    }  # fmt: skip
    record = (recorder.topics.alerts, "Alert", alert, "acme/fraud/v1")
    recorder.send([record, record])
    recorder.send([record])
    assert rows(
        recorder.settings,
        "SELECT kind, severity, metric, value, created_at, payload FROM alerts WHERE alert_id = %s",
        alert["alert_id"],
    ) == [("calibration", "warning", "ece", 0.09, ts(T0 + 5_000), {"bins": "10"})]


def test_a_record_postgresql_refuses_is_a_dead_letter_and_the_rest_is_written(
    recorder: Recorder,
) -> None:
    good = recorder.decision([0.9], threshold=0.6)
    bad = recorder.decision([0.9], threshold=0.6)
    bad[2]["predictions"]["event_ids"] = ["not-a-uuid"]
    reader = TopicReader(recorder.settings, [recorder.topics.deadletter], CODEC)
    recorder.send([bad, good])
    assert rows(
        recorder.settings, "SELECT status FROM predictions WHERE event_id = %s", ids_of(good)[0]
    ) == [("auto",)]
    reader.wait_for(lambda: bool(reader.records[recorder.topics.deadletter]), 15, "the dead letter")
    (dead,) = [d.record for d in reader.records[recorder.topics.deadletter]]
    reader.close()
    assert dead["error_code"] == "rejected_by_database" and dead["service"] == "recorder"
    assert dead["source_topic"] == recorder.topics.decisions and "uuid" in dead["message"]


def test_one_refused_event_costs_only_that_event_not_its_batch(recorder: Recorder) -> None:
    """A decision batch of four whose third event holds a NUL (PostgreSQL text cannot): the
    three others are stored, the third is dead-lettered alone, with its event id."""
    d = recorder.decision([0.9, 0.8, 0.7, 0.3], threshold=0.6)
    d[2]["predictions"]["predicted_labels"][2] = "y\x00es"
    ids = ids_of(d)
    reader = TopicReader(recorder.settings, [recorder.topics.deadletter], CODEC)
    recorder.send([d])
    got = rows(
        recorder.settings,
        "SELECT event_id::text FROM predictions WHERE event_id = ANY(%s::uuid[])",
        ids,
    )
    assert sorted(r[0] for r in got) == sorted([ids[0], ids[1], ids[3]])

    def ours() -> list[dict[str, Any]]:
        found = [x.record for x in reader.records[recorder.topics.deadletter]]
        return [x for x in found if x["source_topic"] == recorder.topics.decisions]

    reader.wait_for(lambda: any(x["event_id"] in ids for x in ours()), 15, "dead letter")
    dead = [(x["event_id"], x["error_code"]) for x in ours() if x["event_id"] in ids]
    reader.close()
    assert dead == [(ids[2], "rejected_by_database")]


def test_replaying_every_decision_label_and_alert_changes_no_row(recorder: Recorder) -> None:
    """Runs last: replays everything the tests above produced, in its original order."""
    before = dump(recorder.settings)
    assert len(before["predictions"]) >= 10 and before["alerts"]
    reader = TopicReader(
        recorder.settings,
        [recorder.topics.decisions, recorder.topics.labels, recorder.topics.alerts],
        CODEC,
    )
    reader.wait_for(
        lambda: sum(len(v) for v in reader.raw.values()) >= recorder.sent,
        30,
        f"the {recorder.sent} messages sent so far",
    )
    replay = [(t, raw) for t, values in reader.raw.items() for raw in values]
    reader.close()
    assert len(replay) == recorder.sent
    producer = make_producer(recorder.settings)
    for topic, raw in replay:
        producer.produce(topic, raw)
    assert producer.flush(15) == 0
    recorder.settle()
    assert dump(recorder.settings) == before
