"""The simulator's events have the calibration they claim to have."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.generator import ModelSpec, expected_ece, generate


def test_same_seed_same_events() -> None:
    a = generate(ModelSpec(numeric_features=2), 200, seed=3, start_ms=0)
    b = generate(ModelSpec(numeric_features=2), 200, seed=3, start_ms=0)
    assert a.predictions.event_ids == b.predictions.event_ids
    np.testing.assert_array_equal(a.predictions.confidences, b.predictions.confidences)
    assert a.ground_truth == b.ground_truth


@pytest.mark.parametrize("gap", [0.0, 0.05, 0.15])
def test_expected_ece_equals_the_overconfidence_gap(gap: float) -> None:
    # Confidence never falls below 1/3 + gap's reach of 0 here, so the clip never bites and
    # every bin's accuracy is exactly its mean confidence minus the gap.
    assert expected_ece(ModelSpec(overconfidence=gap)) == pytest.approx(gap, abs=1e-9)


def test_realised_accuracy_tracks_the_curve() -> None:
    gen = generate(ModelSpec(overconfidence=0.1), 50_000, seed=5, start_ms=0)
    conf = gen.predictions.confidences
    # E[correct] = E[c] − 0.1; 50,000 Bernoulli draws: standard error ≈ 0.002.
    assert gen.correct.mean() == pytest.approx(conf.mean() - 0.1, abs=0.01)


def test_probabilities_agree_with_prediction_and_confidence() -> None:
    gen = generate(ModelSpec(classes=("a", "b", "c", "d")), 2_000, seed=1, start_ms=0)
    p = gen.predictions.probabilities
    assert p is not None
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    top = np.asarray(gen.predictions.class_labels)[p.argmax(axis=1)]
    assert top.tolist() == gen.predictions.predicted_labels
    np.testing.assert_allclose(p.max(axis=1), gen.predictions.confidences)


def test_late_labels_arrive_later_and_wrong_answers_differ() -> None:
    spec = ModelSpec(late_label_share=0.5, label_share=0.8)
    gen = generate(spec, 5_000, seed=2, start_ms=1_000)
    assert not gen.late[~gen.labeled].any()
    delay = gen.label_time_ms - gen.predictions.event_time_ms
    assert (delay[gen.late] >= 60_000).all() and (delay[~gen.late] == 0).all()
    truth = np.asarray(gen.ground_truth)
    pred = np.asarray(gen.predictions.predicted_labels)
    assert ((truth == pred) == gen.correct).all()


def test_grid_rounding() -> None:
    gen = generate(ModelSpec(), 1_000, seed=4, start_ms=0, grid=0.001)
    c = gen.predictions.confidences
    np.testing.assert_allclose(c * 1000, np.round(c * 1000), atol=1e-9)
