"""Calibration methods against references: scikit-learn, hand-computed cases, known maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import _sigmoid_calibration
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from shared.recalibration.appliers import build, logit, sigmoid
from shared.recalibration.artifact import artifact_version, canonical
from shared.recalibration.data import FailureReason, FitData, FitFailure, Fitted, log_scores
from shared.recalibration.maps import from_registry
from shared.recalibration.methods import METHODS, FitOptions, fit


def _binary(n: int, seed: int, temperature: float = 1.0) -> FitData:
    """Top-label data of a binary model whose labels follow σ(x / temperature)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, n)
    p = sigmoid(x)
    positive = rng.random(n) < sigmoid(x / temperature)
    conf = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == positive
    return FitData(conf, correct)


def _apply(result: Fitted, c: np.ndarray) -> np.ndarray:
    return build(artifact_version(result.artifact), result.artifact).apply(c, None, None, [])


def test_temperature_recovers_t3_binary_and_keeps_auc() -> None:
    data = _binary(20_000, 1, temperature=3.0)
    result = fit("temperature", data)
    assert isinstance(result, Fitted)
    t = result.artifact["params"]["temperature"]
    assert abs(t - 3.0) / 3.0 < 0.10
    calibrated = _apply(result, data.confidences)
    raw_auc = roc_auc_score(data.correct, data.confidences)
    assert roc_auc_score(data.correct, calibrated) == pytest.approx(raw_auc, abs=1e-12)


def test_temperature_recovers_t3_from_probabilities_multiclass() -> None:
    rng = np.random.default_rng(2)
    n, k = 20_000, 10
    z = rng.normal(0.0, 2.0, (n, k))
    reported = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # the model says softmax(z)
    true_p = np.exp(z / 3.0) / np.exp(z / 3.0).sum(axis=1, keepdims=True)  # truth: z / 3
    y = (true_p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    classes = tuple(f"c{i}" for i in range(k))
    data = FitData(
        reported.max(axis=1), reported.argmax(axis=1) == y, classes, log_scores(reported), y
    )
    result = fit("temperature", data)
    assert isinstance(result, Fitted)
    assert result.artifact["input"] == "probabilities"
    assert abs(result.artifact["params"]["temperature"] - 3.0) / 3.0 < 0.10
    m = from_registry("t", result.artifact)
    calibrated = m.apply(reported.max(axis=1), reported, None, list(classes))
    assert calibrated.mean() < reported.max(axis=1).mean()  # over-confidence removed
    acc = float(data.correct.mean())
    assert abs(calibrated.mean() - acc) < 0.01


def test_platt_matches_scikit_learn() -> None:
    data = _binary(5_000, 3, temperature=2.0)
    result = fit("platt", data)
    assert isinstance(result, Fitted)
    f = logit(data.confidences)
    a, b = _sigmoid_calibration(f, data.correct.astype(int))
    grid = np.linspace(0.5, 0.999, 50)
    expected = 1.0 / (1.0 + np.exp(a * logit(grid) + b))
    np.testing.assert_allclose(_apply(result, grid), expected, atol=1e-5)


def test_isotonic_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(4)
    conf = np.round(rng.uniform(0.5, 1.0, 3_000), 2)  # many ties
    correct = rng.random(conf.size) < conf**2
    result = fit("isotonic", FitData(conf, correct))
    assert isinstance(result, Fitted)
    ref = IsotonicRegression(out_of_bounds="clip").fit(conf, correct.astype(float))
    grid = np.linspace(0.3, 1.0, 400)  # beyond both ends too
    np.testing.assert_allclose(_apply(result, grid), ref.predict(grid), atol=1e-9)


def test_isotonic_one_vs_rest_renormalised() -> None:
    rng = np.random.default_rng(5)
    n, k = 3_000, 3
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    data = FitData(p.max(axis=1), p.argmax(axis=1) == y, ("a", "b", "c"), log_scores(p), y)
    result = fit("isotonic", data, FitOptions(isotonic_max_points=10_000))  # exact PAV
    assert isinstance(result, Fitted)
    m = from_registry("iso", result.artifact)
    out = m.apply(p.max(axis=1), p, None, ["a", "b", "c"])
    q = np.column_stack(
        [
            IsotonicRegression(out_of_bounds="clip")
            .fit(p[:, j], (y == j).astype(float))
            .predict(p[:, j])
            for j in range(k)
        ]
    )
    expected = q[np.arange(n), p.argmax(axis=1)] / q.sum(axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_histogram_hand_computed() -> None:
    conf = np.array([0.05, 0.15, 0.15, 0.95, 1.0] * 30)
    correct = np.array([True, False, True, True, False] * 30)
    result = fit("histogram", FitData(conf, correct), FitOptions(histogram_bins=10))
    assert isinstance(result, Fitted)
    values = result.artifact["params"]["values"]
    # bin 0: 1/1; bin 1: 1/2; bin 9 holds 0.95 (right) and 1.0 (wrong): 1/2; empty: midpoint
    assert values == [1.0, 0.5, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.5]
    np.testing.assert_allclose(_apply(result, np.array([0.0, 0.19, 0.3, 1.0])), [1, 0.5, 0.35, 0.5])


def test_beta_on_calibrated_data_is_identity() -> None:
    """Calibrated scores: σ(1·ln s − 1·ln(1−s) + 0) = s, so (a, b, c) = (1, 1, 0)."""
    rng = np.random.default_rng(6)
    s = rng.uniform(0.001, 0.999, 200_000)
    result = fit("beta", FitData(s, rng.random(s.size) < s))
    assert isinstance(result, Fitted)
    p = result.artifact["params"]
    assert p["a"] == pytest.approx(1.0, abs=0.05)
    assert p["b"] == pytest.approx(1.0, abs=0.05)
    assert p["c"] == pytest.approx(0.0, abs=0.05)


def test_beta_negative_coefficient_is_zeroed_and_refit() -> None:
    """Accuracy falling with confidence gives a < 0 unconstrained: a = 0, refit on b, c."""
    rng = np.random.default_rng(7)
    s = rng.uniform(0.05, 0.95, 50_000)
    y = rng.random(s.size) < sigmoid(-2.0 * np.log(s) - 0.5 * np.log1p(-s))
    result = fit("beta", FitData(s, y))
    assert isinstance(result, Fitted)
    p = result.artifact["params"]
    assert p["a"] == 0.0 or p["b"] == 0.0
    assert p["a"] >= 0.0 and p["b"] >= 0.0


def test_vector_scaling_recovers_per_class_scale() -> None:
    rng = np.random.default_rng(8)
    n, k = 20_000, 4
    z = rng.normal(0, 2, (n, k))
    w_true = np.array([0.5, 1.0, 0.5, 1.0])
    s = z * w_true
    true_p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    y = (true_p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    data = FitData(
        np.ones(n), z.argmax(axis=1) == y, ("a", "b", "c", "d"), z, y, score_input="logits"
    )
    result = fit("vector_scaling", data)
    assert isinstance(result, Fitted)
    np.testing.assert_allclose(result.artifact["params"]["w"], w_true, atol=0.08)
    # Class order of a batch may differ from the artifact's: parameters follow the names.
    m = from_registry("vs", result.artifact)
    perm = [3, 2, 1, 0]
    a = m.apply(np.ones(n), None, z, ["a", "b", "c", "d"])
    b = m.apply(np.ones(n), None, z[:, perm], ["d", "c", "b", "a"])
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_input_is_a_typed_failure(method: str) -> None:
    rng = np.random.default_rng(9)
    conf = rng.uniform(0.5, 1.0, 500)
    p = np.column_stack([conf, 1 - conf])
    y = rng.integers(0, 2, 500)

    def data(c: np.ndarray, ok: np.ndarray, yy: np.ndarray, probs: np.ndarray) -> FitData:
        return FitData(c, ok, ("x", "y"), log_scores(probs), yy)

    cases = {
        FailureReason.TOO_FEW_SAMPLES: data(conf[:10], y[:10] == 0, y[:10], p[:10]),
        FailureReason.ONE_CLASS: data(conf, np.ones(500, bool), np.zeros(500, int), p),
        FailureReason.NON_FINITE: data(
            np.where(np.arange(500) == 3, np.nan, conf),
            y == 0,
            y,
            np.where(np.arange(500)[:, None] == 3, np.nan, p),
        ),
    }
    for reason, d in cases.items():
        if method in ("platt", "histogram", "beta"):
            d = FitData(d.confidences, d.correct)
        result = fit(method, d)
        assert isinstance(result, FitFailure), (method, reason)
        assert result.reason == reason, (method, reason, result.message)


def test_separable_data_does_not_converge() -> None:
    conf = np.linspace(0.5, 1.0, 400)
    result = fit("beta", FitData(conf, conf > 0.75))
    assert isinstance(result, FitFailure)
    assert result.reason == FailureReason.NO_CONVERGENCE
    # Every argmax right: the NLL keeps falling as T → 0, the search ends at its bound.
    conf = np.linspace(0.6, 0.99, 400)
    p = np.column_stack([conf, 1 - conf])
    y = np.zeros(400, dtype=np.int64)
    y[::2] = 1
    p[::2] = p[::2, ::-1]
    result = fit("temperature", FitData(conf, np.ones(400, bool), ("a", "b"), log_scores(p), y))
    assert isinstance(result, FitFailure)
    assert result.reason == FailureReason.NO_CONVERGENCE


def test_vector_scaling_needs_vectors() -> None:
    result = fit("vector_scaling", FitData(np.full(500, 0.8), np.arange(500) % 2 == 0))
    assert isinstance(result, FitFailure)
    assert result.reason == FailureReason.NEEDS_VECTORS


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "histogram", "beta"])
def test_same_data_same_artifact_bytes(method: str) -> None:
    data = _binary(3_000, 10, temperature=2.0)
    a, b = fit(method, data), fit(method, data)
    assert isinstance(a, Fitted) and isinstance(b, Fitted)
    assert canonical(a.artifact) == canonical(b.artifact)
    assert artifact_version(a.artifact) == artifact_version(b.artifact)
    # The artifact is plain JSON: another language parses and applies these numbers.
    assert json.loads(canonical(a.artifact)) == a.artifact


def test_vector_map_leaves_rows_without_vectors_raw() -> None:
    art = {"format": 1, "kind": "temperature", "input": "probabilities",
           "classes": ["a", "b"], "params": {"beta": 0.5, "temperature": 2.0}}  # fmt: skip
    m = from_registry("t", art)
    p = np.array([[0.9, 0.1], [np.nan, np.nan]])
    out = m.apply(np.array([0.9, 0.8]), p, None, ["a", "b"])
    assert out[1] == 0.8
    assert out[0] == pytest.approx(3.0 / 4.0)  # softmax(0.5·ln(0.9, 0.1)) = 3/(3+1)
    assert list(m.apply(np.array([0.9, 0.8]), p, None, ["a", "zz"])) == [0.9, 0.8]
