"""REST events: records, the ingest validation as 422 details, and predicted decisions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from services.gateway.intake import Prepared, batch_messages, event_message, prepare
from services.gateway.model_cache import ModelRef
from services.gateway.schemas import PredictionIn
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.recalibration.maps import IDENTITY

NOW_MS = 1_790_000_000_000
TRIAGE = ModelRef(7, "acme", "triage", "v1", 0.7, IDENTITY)


def event(**fields: Any) -> PredictionIn:
    return PredictionIn.model_validate(
        {"model_version_id": 7, "confidence": 0.9, "predicted_label": "yes", **fields}
    )


def prepared(events: list[PredictionIn], batch: bool = True, model: ModelRef = TRIAGE) -> Prepared:
    out = prepare(events, "acme", [model] * len(events), NOW_MS, batch)
    assert isinstance(out, Prepared), out
    return out


def faults(events: list[PredictionIn], batch: bool, models: list[ModelRef | None] | None = None):
    out = prepare(events, "acme", models or [TRIAGE] * len(events), NOW_MS, batch)
    assert isinstance(out, list), "expected 422 details"
    return out


def test_threshold_rule_at_below_and_above() -> None:
    p = prepared([event(confidence=c) for c in (0.0, 0.69, 0.7, 0.71, 1.0)])
    assert [d.status for d in p.decisions] == ["review", "review", "auto", "auto", "auto"]
    assert {d.threshold for d in p.decisions} == {0.7}
    assert [d.calibrated_confidence for d in p.decisions] == [0.0, 0.69, 0.7, 0.71, 1.0]


@dataclass(frozen=True)
class Halve:
    """A calibration map that halves every confidence (stands in for a fitted one)."""

    version: str = "halve-1"

    def apply(self, confidences: Any, probabilities: Any, logits: Any, labels: Any) -> Any:
        return confidences / 2


def test_decision_uses_the_models_calibration_map() -> None:
    model = ModelRef(7, "acme", "triage", "v1", 0.4, Halve())
    p = prepared([event(confidence=0.9), event(confidence=0.78)], model=model)
    # 0.9 -> 0.45 >= 0.4 auto; 0.78 -> 0.39 < 0.4 review
    assert [d.status for d in p.decisions] == ["auto", "review"]
    assert [d.calibrated_confidence for d in p.decisions] == [0.45, 0.39]


def test_record_fields_and_defaults() -> None:
    eid = uuid.uuid4()
    p = prepared(
        [event(event_id=str(eid), event_time="2026-01-02T03:04:05"), event(uncertainty=0.2)],
        batch=True,
    )
    first, second = p.records
    assert first["event_id"] == str(eid)
    # a time without a zone is UTC: 2026-01-02T03:04:05Z
    assert first["event_time_ms"] == 1_767_323_045_000
    assert first["model_name"] == "triage" and first["model_version"] == "v1"
    assert first["model_version_id"] == 7 and first["tenant"] == "acme"
    assert uuid.UUID(second["event_id"])  # generated
    assert second["event_time_ms"] == NOW_MS
    assert second["uncertainty"] == 0.2 and second["metadata"] == {}


def test_confidence_out_of_range_names_the_field_and_value() -> None:
    [detail] = faults([event(confidence=1.7)], batch=False)
    assert detail["loc"] == ["body", "confidence"]
    assert "1.7" in detail["msg"] and detail["type"] == "confidence_out_of_range"


def test_batch_faults_carry_the_event_index_in_order() -> None:
    events = [
        event(),
        event(confidence=-0.1),
        event(),
        event(probabilities={"yes": 0.9, "no": 0.3}),
        # Only what the request models let through reaches intake (which refuses infinity
        # for the Kafka path too): build it without them.
        event().model_copy(update={"features": {"x": float("inf")}}),
    ]
    details = faults(events, batch=True)
    assert [d["loc"] for d in details] == [
        ["body", "events", 1, "confidence"],
        ["body", "events", 3, "probabilities"],
        ["body", "events", 4, "features", "x"],
    ]
    assert "sum to 1.2" in details[1]["msg"]


def test_unknown_model_names_the_field_used() -> None:
    by_id, by_name, neither = faults(
        [
            event(model_version_id=99),
            event(model_version_id=None, model_name="m", model_version="v"),
            event(model_version_id=None),
        ],
        batch=True,
        models=[None, None, None],
    )
    assert by_id["loc"] == ["body", "events", 0, "model_version_id"]
    assert "99" in by_id["msg"]
    assert by_name["loc"] == ["body", "events", 1, "model_name"]
    assert neither["loc"] == ["body", "events", 2, "model_version_id"]
    assert "required" in neither["msg"]


def test_single_event_message_decodes_as_inference_event(codec: AvroCodec) -> None:
    p = prepared([event(features={"age": 40.0, "site": "b"})], batch=False)
    key, value = event_message(p.records[0], codec)
    assert key == b"acme/triage/v1"
    decoded = codec.decode(value, {"InferenceEvent"})
    assert isinstance(decoded, Decoded)
    assert decoded.record["event_id"] == p.records[0]["event_id"]
    assert decoded.record["features"] == {"age": 40.0, "site": "b"}


def test_batch_messages_split_per_model_and_size(codec: AvroCodec) -> None:
    other = ModelRef(8, "acme", "triage", "v2", 0.5, IDENTITY)
    events = [event(confidence=0.5 + i / 100) for i in range(5)] + [event(model_version_id=8)]
    out = prepare(events, "acme", [TRIAGE] * 5 + [other], NOW_MS, True)
    assert isinstance(out, Prepared)
    messages = batch_messages(out, codec, max_events=2)
    assert [k for k, _ in messages] == [b"acme/triage/v1"] * 3 + [b"acme/triage/v2"]
    ids: list[str] = []
    for _, value in messages:
        decoded = codec.decode(value, {"PredictionBatch"})
        assert isinstance(decoded, Decoded)
        cols = PredictionColumns.from_record(decoded.record)
        assert len(cols) <= 2
        ids += cols.event_ids
    assert ids == [r["event_id"] for r in out.records]
    np.testing.assert_allclose(
        PredictionColumns.from_record(codec.decode(messages[0][1]).record).confidences,  # type: ignore[union-attr]
        [0.5, 0.51],
    )


def test_wrong_types_are_rejected_by_the_body_model() -> None:
    with pytest.raises(ValueError, match="confidence"):
        event(confidence="high")
    with pytest.raises(ValueError, match="event_id"):
        event(event_id="not-a-uuid")
    assert event(event_time=datetime(2026, 1, 1)).event_time is not None
