"""Validation of inference events: each fault kind, its code and the field it names."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import pytest

from shared.contracts.errors import ErrorCode
from shared.contracts.validation import Limits, check_batch_record, group_events, validate_columns

T0 = 1_767_225_600_000  # 2026-01-01


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "tenant": "acme",
        "model_name": "fraud",
        "model_version": "v1",
        "model_version_id": None,
        "event_time_ms": T0,
        "predicted_label": "yes",
        "confidence": 0.8,
        "probabilities": {"yes": 0.8, "no": 0.2},
        "logits": None,
        "features": {"amount": 12.5, "country": "fr"},
        "ground_truth": None,
        "uncertainty": None,
        "metadata": {},
    }
    base.update(changes)
    return base


def faults_of(events: list[dict[str, Any]]) -> list[tuple[int, ErrorCode, str | None]]:
    rows, faults = group_events(enumerate(events))
    out = [(ref, f.code, f.field) for ref, f in faults]
    for r in rows:
        _, col_faults = validate_columns(r.columns)
        out += [(r.refs[row], f.code, f.field) for row, f in col_faults]
    return sorted(out)


def test_a_valid_event_passes() -> None:
    assert faults_of([event()]) == []


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        (
            {"confidence": math.nan, "probabilities": None},
            ErrorCode.CONFIDENCE_NOT_FINITE,
            "confidence",
        ),
        (
            {"confidence": math.inf, "probabilities": None},
            ErrorCode.CONFIDENCE_NOT_FINITE,
            "confidence",
        ),
        (
            {"confidence": 1.7, "probabilities": None},
            ErrorCode.CONFIDENCE_OUT_OF_RANGE,
            "confidence",
        ),
        (
            {"confidence": -0.1, "probabilities": None},
            ErrorCode.CONFIDENCE_OUT_OF_RANGE,
            "confidence",
        ),
        (
            {"probabilities": {"yes": 0.8, "no": 0.3}},
            ErrorCode.PROBABILITIES_NOT_NORMALISED,
            "probabilities",
        ),
        (
            {"probabilities": {"yes": 0.8, "no": math.nan}},
            ErrorCode.PROBABILITIES_INVALID,
            "probabilities.no",
        ),
        (
            {"probabilities": {"yes": 1.2, "no": -0.2}},
            ErrorCode.PROBABILITIES_INVALID,
            "probabilities",
        ),
        (
            {"probabilities": {"maybe": 0.8, "no": 0.2}},
            ErrorCode.PROBABILITIES_INCONSISTENT,
            "predicted_label",
        ),
        ({"confidence": 0.7}, ErrorCode.PROBABILITIES_INCONSISTENT, "confidence"),
        (
            {"probabilities": {"yes": 0.4, "no": 0.6}, "confidence": 0.4},
            ErrorCode.PROBABILITIES_INCONSISTENT,
            "confidence",
        ),
        ({"model_name": ""}, ErrorCode.MISSING_MODEL, "model_name"),
        ({"model_version": None}, ErrorCode.MISSING_MODEL, "model_version"),
        ({"model_name": "a/b"}, ErrorCode.MISSING_MODEL, "model_name"),
        ({"event_id": "42"}, ErrorCode.INVALID_EVENT_ID, "event_id"),
        ({"predicted_label": ""}, ErrorCode.MISSING_FIELD, "predicted_label"),
        ({"event_time_ms": 5}, ErrorCode.INVALID_TIME, "event_time_ms"),
        ({"features": {"amount": math.inf}}, ErrorCode.FEATURES_INVALID, "features.amount"),
        ({"features": {f"f{i}": 1.0 for i in range(300)}}, ErrorCode.TOO_LARGE, "features"),
        ({"model_name": "m" * 300}, ErrorCode.TOO_LARGE, "model_name"),
    ],
)
def test_each_fault_has_its_code_and_field(
    changes: dict[str, Any], code: ErrorCode, field: str
) -> None:
    assert faults_of([event(), event(**changes)]) == [(1, code, field)]


def test_tolerance_of_probability_sum_is_1e3() -> None:
    ok = event(probabilities={"yes": 0.8, "no": 0.2009})
    bad = event(probabilities={"yes": 0.8, "no": 0.2011})
    assert faults_of([ok, bad]) == [(1, ErrorCode.PROBABILITIES_NOT_NORMALISED, "probabilities")]


def test_a_feature_that_changes_type_is_rejected() -> None:
    found = faults_of([event(), event(features={"amount": "big"})])
    assert found == [(1, ErrorCode.FEATURES_INVALID, "features.amount")]


def test_grouping_makes_one_column_set_per_model_version() -> None:
    events = [
        event(),
        event(model_version="v2"),
        event(),
        event(probabilities=None, confidence=0.6),
    ]
    rows, faults = group_events(enumerate(events))
    assert faults == []
    by_key = {r.columns.key: r for r in rows}
    assert set(by_key) == {"acme/fraud/v1", "acme/fraud/v2"}
    v1 = by_key["acme/fraud/v1"]
    assert v1.refs == [0, 2, 3]
    assert v1.columns.class_labels == ["no", "yes"]
    assert v1.columns.probabilities is not None
    np.testing.assert_allclose(v1.columns.probabilities[0], [0.2, 0.8])
    assert np.isnan(v1.columns.probabilities[2]).all()  # no probabilities on that event
    np.testing.assert_allclose(v1.columns.numeric_features["amount"], [12.5, 12.5, 12.5])
    assert v1.columns.categorical_features["country"] == ["fr", "fr", "fr"]


def test_batch_shape_mismatch_is_rejected() -> None:
    record = {
        "tenant": "acme",
        "model_name": "fraud",
        "model_version": "v1",
        "event_ids": ["a", "b"],
        "event_time_ms": [T0, T0],
        "predicted_labels": ["yes"],
        "confidences": [0.5, 0.6],
        "class_labels": [],
        "probabilities": [],
        "logits": [],
        "numeric_features": {},
        "categorical_features": {},
        "ground_truths": [],
        "uncertainties": [],
        "metadata": [],
    }
    fault = check_batch_record(record)
    assert (
        fault is not None
        and fault.code is ErrorCode.BATCH_SHAPE
        and fault.field == "predicted_labels"
    )
    record["predicted_labels"] = ["yes", "no"]
    record["numeric_features"] = {"x": [1.0]}
    fault = check_batch_record(record)
    assert fault is not None and fault.field == "numeric_features.x"
    record["numeric_features"] = {"x": [1.0, 2.0]}
    assert check_batch_record(record) is None
    assert check_batch_record(record, Limits(max_batch_events=1)) is not None
