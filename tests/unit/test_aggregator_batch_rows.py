"""BatchRows encodes each stored prediction exactly as its PredictionRecord would."""

from __future__ import annotations

import numpy as np
import pytest

from services.aggregator.processing import BatchRows, PredictionRecord
from shared.contracts.batches import DecisionColumns, PredictionColumns

NAN = float("nan")


def _decisions(shadow: bool, segments: bool, probabilities: bool) -> DecisionColumns:
    n = 4
    p = PredictionColumns(
        tenant="acme",
        model_name="fraud",
        model_version="v1",
        event_ids=[f"e{i}" for i in range(n)],
        event_time_ms=np.array([1_000, 2_000, 3_000, 4_000], dtype=np.int64),
        predicted_labels=["cat", "dog", "cat", "bird"],
        confidences=np.array([0.8, 0.1 + 0.2, 1.0, 0.5]),
        class_labels=["cat", "dog"] if probabilities else [],
        probabilities=np.array([[0.8, 0.2], [NAN, NAN], [1.0, 0.0], [0.5, 0.5]])
        if probabilities
        else None,
    )
    return DecisionColumns(
        predictions=p,
        calibrated_confidences=np.array([0.7, NAN, 0.99, 1 / 3]),
        review=np.array([False, True, False, True]),
        threshold=0.6,
        threshold_source="registry",
        calibrator_version="cal-1",
        decided_at_ms=5_000,
        calibrator_versions=["cal-1", "cal-2", "cal-1", "cal-2"] if shadow else None,
        segment_key="region" if segments else None,
        segments=["eu", None, "a\x1fb%", "us"] if segments else None,
        shadow_calibrator_version="cal-2" if shadow else None,
        shadow_confidences=np.array([0.6, 0.2, 0.5, 0.4]) if shadow else None,
        shadow_review=np.array([False, True, True, True]) if shadow else None,
    )


@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize("segments", [False, True])
@pytest.mark.parametrize("probabilities", [False, True])
def test_encoded_rows_equal_their_records(
    shadow: bool, segments: bool, probabilities: bool
) -> None:
    rows = BatchRows(_decisions(shadow, segments, probabilities))
    for i in range(4):
        rec = rows.record(i)
        rec.slot = 7_200
        text = rows.encoded(i, 7_200)
        assert text == rec.encode()
        back = PredictionRecord.decode(text)
        assert back.slot == 7_200 and back.event_ms == (i + 1) * 1_000
        assert back.segment == rec.segment


def test_record_fields() -> None:
    rows = BatchRows(_decisions(shadow=True, segments=True, probabilities=True))
    first, second = rows.record(0), rows.record(1)
    assert first.probabilities == [0.8, 0.2] and first.classes == ["cat", "dog"]
    assert second.probabilities is None and second.classes == []  # a NaN row: none
    assert first.segment == "region=eu" and second.segment == ""
    assert first.auto and not second.auto
    # Row 1 was decided by the candidate (canary): active and candidate swap back.
    assert second.canary and second.active == 0.2 and second.candidate != second.candidate
    assert not first.canary and first.active == 0.7 and first.candidate == 0.6
    assert first.shadow_version == "cal-2"
