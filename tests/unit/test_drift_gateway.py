"""The reference upload's column building: numbers, categories, missing values, bad input."""

from __future__ import annotations

import math

import pytest
from fastapi import HTTPException

from services.gateway.routes.drift import ReferenceEvent, _columns
from shared.windows.drift import MAX_FEATURES


def events(*features: dict[str, float | str] | None) -> list[ReferenceEvent]:
    return [ReferenceEvent(confidence=0.9, predicted_label="a", features=f) for f in features]


def test_numbers_and_categories_with_missing_values() -> None:
    cols = _columns(events({"x": 1.0, "c": "p"}, {"x": 2}, None))
    assert cols["c"] == ["p", "", ""]
    assert cols["x"][:2].tolist() == [1.0, 2.0] and math.isnan(cols["x"][2])


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ([{"x": 1.0}, {"x": "a"}], "mixes numbers and categories"),
        ([{"__confidence__": 1.0}], "reserved feature name"),
        ([{f"f{i}": 1.0 for i in range(MAX_FEATURES)}, {"g": 1.0}], f"at most {MAX_FEATURES}"),
    ],
)
def test_bad_columns_are_422_naming_the_feature(
    features: list[dict[str, float | str]], reason: str
) -> None:
    with pytest.raises(HTTPException) as err:
        _columns(events(*features))
    assert err.value.status_code == 422
    assert reason in str(err.value.detail)
