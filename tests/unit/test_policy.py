"""The abstain decision and the calibration-map factory."""

from __future__ import annotations

import numpy as np
import pytest

from services.policy.processing import decide
from shared.batches import PredictionColumns
from shared.calibration_map import IDENTITY, CalibratorError, from_registry


def cols(confidences: list[float]) -> PredictionColumns:
    n = len(confidences)
    return PredictionColumns(
        tenant="t",
        model_name="m",
        model_version="v",
        event_ids=[f"e{i}" for i in range(n)],
        event_time_ms=np.zeros(n, dtype=np.int64),
        predicted_labels=["a"] * n,
        confidences=np.asarray(confidences),
    )


def test_below_threshold_is_review_and_at_threshold_is_auto() -> None:
    d = decide(cols([0.0, 0.69, 0.7, 0.71, 1.0]), 0.7, IDENTITY, "registry", 123)
    assert d.review.tolist() == [True, True, False, False, False]
    assert d.threshold == 0.7 and d.decided_at_ms == 123
    assert d.calibrator_version == "identity"
    record = d.to_record()
    assert record["statuses"] == ["review", "review", "auto", "auto", "auto"]
    np.testing.assert_array_equal(d.calibrated_confidences, [0.0, 0.69, 0.7, 0.71, 1.0])


def test_threshold_zero_accepts_everything_and_one_withholds_all_but_certain() -> None:
    assert not decide(cols([0.0, 0.5]), 0.0, IDENTITY, "default", 0).review.any()
    assert decide(cols([0.99, 1.0]), 1.0, IDENTITY, "default", 0).review.tolist() == [True, False]


def test_factory() -> None:
    assert from_registry("identity", None) is IDENTITY
    assert from_registry("cal-7", '{"kind": "identity"}').version == "cal-7"
    with pytest.raises(CalibratorError, match="'isotonic'"):
        from_registry("cal-8", '{"kind": "isotonic"}')
    with pytest.raises(CalibratorError, match="not JSON"):
        from_registry("cal-9", "{")
