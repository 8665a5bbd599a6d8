"""Scenarios: reproducible, and what each promises is in its generated events."""

from __future__ import annotations

import numpy as np
import pytest

from shared.contracts.batches import PredictionColumns
from simulator.generator import Generated, ModelSpec
from simulator.scenarios import SCENARIOS, expected_of, plan, scenario

NOW = 1_800_000_000_000


def test_the_same_scenario_gives_the_same_events() -> None:
    a, b = plan(scenario("seed"), NOW), plan(scenario("seed"), NOW + 5_000)
    for x, y in zip(a, b, strict=True):
        assert x.generated.predictions.event_ids == y.generated.predictions.event_ids
        np.testing.assert_array_equal(
            x.generated.predictions.confidences, y.generated.predictions.confidences
        )
    ids = [
        set(p.generated.predictions.event_ids)
        for name in SCENARIOS
        for p in plan(scenario(name), NOW)
    ]
    assert sum(len(s) for s in ids) == len(set().union(*ids)), "event ids collide across versions"


def test_seed_is_a_calibrated_production_version_beside_an_over_confident_child() -> None:
    s = scenario("seed")
    v1, v2 = plan(s, NOW)
    assert v1.plan.stage == "production" and v2.plan.parent == 0
    assert v1.expected.ece == pytest.approx(0.04, abs=0.01)
    assert v2.expected.ece == pytest.approx(0.17, abs=0.02)
    assert v1.expected.backlog > 50 and v2.expected.backlog > 50
    assert v1.expected.labeled / v1.expected.events > 0.85


def test_drift_shifts_only_the_named_features_from_the_middle_on() -> None:
    s = scenario("drift")
    (p,) = plan(s, NOW)
    feats = p.generated.predictions.numeric_features
    half = s.events // 2
    for name, values in feats.items():
        shift = values[half:].mean() - values[:half].mean()
        if name in s.drifted:
            assert shift == pytest.approx(1.0, abs=0.1), name
        else:
            assert abs(shift) < 0.1, name


def test_label_delay_labels_trail_their_predictions_by_minutes_to_hours() -> None:
    (p,) = plan(scenario("label-delay"), NOW)
    g = p.generated
    delay_s = (g.label_time_ms - g.predictions.event_time_ms)[g.late] / 1000
    assert g.late.mean() > 0.7
    assert delay_s.min() >= 120 and delay_s.max() <= 6 * 3600
    assert g.label_time_ms.max() <= NOW  # no label from the future


def test_tenants_are_two() -> None:
    assert scenario("tenants").tenants == ["acme", "globex"]


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="seed, drift, label-delay, tenants"):
        scenario("nope")


def test_expected_figures_by_hand() -> None:
    # confidences 0.95 (right), 0.85 (wrong), 0.65 (right, unlabeled), 0.55 (wrong)
    conf = np.array([0.95, 0.85, 0.65, 0.55])
    cols = PredictionColumns(
        tenant="t",
        model_name="m",
        model_version="v",
        event_ids=["a", "b", "c", "d"],
        event_time_ms=np.zeros(4, dtype=np.int64),
        predicted_labels=["x"] * 4,
        confidences=conf,
    )
    gen = Generated(
        spec=ModelSpec(),
        predictions=cols,
        ground_truth=["x", "y", "x", "y"],
        correct=np.array([True, False, True, False]),
        labeled=np.array([True, True, False, True]),
        late=np.zeros(4, dtype=bool),
        label_time_ms=np.zeros(4, dtype=np.int64),
        expected_ece=0.0,
    )
    e = expected_of(gen, threshold=0.7)
    assert (e.events, e.labeled, e.review, e.backlog) == (4, 3, 2, 1)
    # labeled: bins 9 (0.95 right), 8 (0.85 wrong), 5 (0.55 wrong):
    # ECE = (|1 − 0.95| + |0 − 0.85| + |0 − 0.55|) / 3 = 1.45 / 3
    assert e.ece == pytest.approx(1.45 / 3, abs=1e-12)
    # coverage 1/3 risk 0, 2/3 risk 1/2, 1 risk 2/3: AURC = (0 + 1/2 + 2/3) / 3
    assert e.aurc == pytest.approx((0.5 + 2 / 3) / 3, abs=1e-12)
