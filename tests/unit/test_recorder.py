"""The recorder's column building and message parsing (no database needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from services.policy.processing import decide
from services.recorder.processing import RecorderProcessor
from services.recorder.store import alert_columns, decision_columns, label_columns
from shared.contracts.batches import LabelColumns, PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.recalibration.maps import IDENTITY

TOPICS = Topics.for_namespace("unit")
CODEC = AvroCodec()
E1, E2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"


def predictions() -> PredictionColumns:
    return PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        model_version_id=4,
        event_ids=[E1, E2],
        event_time_ms=np.array([1_000, 2_000], dtype=np.int64),
        predicted_labels=["yes", "no"],
        confidences=np.array([0.9, 0.4]),
        class_labels=["yes", "no"],
        probabilities=np.array([[0.9, 0.1], [np.nan, np.nan]]),
        numeric_features={"amount": np.array([12.5, np.nan])},
        categorical_features={"country": ["fr", ""]},
        uncertainties=np.array([np.nan, 0.25]),
        metadata=[{"k": "v"}, {}],
    )


def test_decision_columns_hold_one_value_per_event_and_nulls_for_what_is_missing() -> None:
    d = decide(predictions(), 0.5, IDENTITY, "registry", 5_000)
    cols = decision_columns([d, d])
    assert len(cols) == 17 and all(len(c) == 4 for c in cols)
    (
        event_ids, tenants, names, versions, ids, times, labels, confidences, calibrated,
        thresholds, calibrators, statuses, probabilities, features, uncertainties, metadata,
        decided,
    ) = cols  # fmt: skip
    assert event_ids[:2] == [E1, E2] and tenants[0] == "acme" and ids[0] == 4
    assert (names[0], versions[0], labels[:2], confidences[:2]) == (
        "fraud",
        "v1",
        ["yes", "no"],
        [0.9, 0.4],
    )
    assert times[:2] == [1_000, 2_000] and decided[:2] == [5_000, 5_000]
    assert statuses[:2] == ["auto", "review"] and thresholds[0] == 0.5
    assert calibrators[0] == "identity" and calibrated[:2] == [0.9, 0.4]
    assert json.loads(probabilities[0]) == {"yes": 0.9, "no": 0.1}
    assert probabilities[1] is None  # a NaN row: the event had no probabilities
    assert json.loads(features[0]) == {"amount": 12.5, "country": "fr"}
    assert features[1] is None
    assert uncertainties[:2] == [None, 0.25]
    assert json.loads(metadata[0]) == {"k": "v"} and metadata[1] is None


def test_label_columns_keep_the_consumed_order() -> None:
    a = LabelColumns("acme", None, None, [E1], ["yes"], ["feed"], np.array([10]))
    b = LabelColumns(
        "beta", "m", "v", [E2, E1], ["no", "no"], ["review", "event"], np.array([20, 30])
    )
    assert label_columns([a, b]) == [
        [E1, E2, E1],
        ["acme", "beta", "beta"],
        ["yes", "no", "no"],
        ["feed", "review", "event"],
        [10, 20, 30],
    ]


def test_alert_columns() -> None:
    alert = {
        "alert_id": E1, "tenant": "acme", "kind": "calibration", "severity": "warning",
        "model_name": "fraud", "model_version": "v1", "model_version_id": None, "metric": "ece",
        "feature": None, "method": None, "value": 0.09, "threshold": 0.05, "window": "1h",
        "reference_version": None, "n_samples": 300, "created_at_ms": 7_000,
        "details": {"b": "2", "a": "1"},
    }  # fmt: skip
    cols = alert_columns([alert])
    assert len(cols) == 17
    assert [c[0] for c in cols[:16]] == [
        E1, "acme", "calibration", "warning", "fraud", "v1", None, "ece", None, None, 0.09,
        0.05, "1h", None, 300, 7_000,
    ]  # fmt: skip
    assert cols[16] == ['{"a": "1", "b": "2"}']


@dataclass
class Msg:
    _topic: str
    _value: bytes

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 9


def test_parse_sorts_records_and_turns_bad_ones_into_faults() -> None:
    processor = RecorderProcessor(TOPICS, CODEC, pool=None)
    d = decide(predictions(), 0.5, IDENTITY, "registry", 5_000).to_record()
    ragged = dict(d, statuses=["auto"])
    label = LabelColumns("acme", None, None, [E1], ["yes"], ["feed"], np.array([10])).to_record()
    messages = [
        Msg(TOPICS.decisions, CODEC.encode("DecisionBatch", d)),
        Msg(TOPICS.decisions, CODEC.encode("DecisionBatch", ragged)),
        Msg(TOPICS.labels, CODEC.encode("LabelBatch", label)),
        Msg(TOPICS.labels, CODEC.encode("DecisionBatch", d)),  # right schema, wrong topic
        Msg(TOPICS.alerts, b"\x00junk"),
    ]
    parsed = processor.parse(messages)  # type: ignore[arg-type]
    assert [i for i, _ in parsed.decisions] == [0]
    assert [i for i, _ in parsed.labels] == [2]
    assert parsed.alerts == []
    assert [(i, code) for i, code, _ in parsed.faults] == [
        (1, "batch_shape"),
        (3, "unexpected_type"),
        (4, "not_avro"),
    ]
    assert "statuses holds 1 values for 2 events" in parsed.faults[0][2]


def test_each_prediction_records_the_map_that_decided_it() -> None:
    d = decide(predictions(), 0.5, IDENTITY, "registry", 5_000)
    d.calibrator_versions = ["isotonic-0123456789abcdef", "identity"]
    calibrators = decision_columns([d])[10]
    assert calibrators == ["isotonic-0123456789abcdef", "identity"]
