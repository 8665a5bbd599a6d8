"""The calibration methods: ``fit(FitData) -> Fitted | FitFailure``, pure numpy/scipy.

Each follows the reference behaviour named in ``docs/recalibration.md``. Top-label fits
learn calibrated confidence from (confidence, correct); vector fits (temperature, vector
scaling, isotonic one-vs-rest) learn from probability or logit vectors and true classes
when every row carries them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from shared.recalibration.appliers import logit
from shared.recalibration.artifact import make_artifact
from shared.recalibration.data import (
    FailureReason,
    FitData,
    FitFailure,
    FitResult,
    Fitted,
    FloatArray,
    check_binary,
    check_vectors,
)
from shared.recalibration.logistic import fit_logistic

LOG_BETA_BOUND = 10.0


@dataclass(frozen=True, slots=True)
class FitOptions:
    min_samples: int = 100
    histogram_bins: int = 15
    isotonic_max_points: int = 1000
    """Above this many distinct confidences, PAV runs on this many fine equal-width bins
    (count, positives, Σ confidence), so the artifact stays small."""
    vector_l2: float = 1e-4
    """Ridge of vector scaling towards the identity (w = 1, b = 0), per row."""


def _nonfinite(method: str, values: FloatArray) -> FitFailure | None:
    if not np.isfinite(values).all():
        return FitFailure(method, FailureReason.NON_FINITE, f"fitted parameters {values}")
    return None


# --- temperature ---------------------------------------------------------------------------


def _scalar_search(method: str, nll: Callable[[float], float]) -> float | FitFailure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = optimize.minimize_scalar(
            lambda lb: nll(float(np.exp(lb))),
            bounds=(-LOG_BETA_BOUND, LOG_BETA_BOUND),
            method="bounded",
            options={"xatol": 1e-8},
        )
    log_beta = float(res.x)
    if not res.success or not np.isfinite(log_beta) or not np.isfinite(res.fun):
        return FitFailure(method, FailureReason.NO_CONVERGENCE, f"search ended: {res.message}")
    if res.fun < 1e-9:
        return FitFailure(
            method, FailureReason.NO_CONVERGENCE, "separable: the NLL falls to 0 as T → 0"
        )
    if abs(log_beta) > LOG_BETA_BOUND - 1e-3:
        return FitFailure(
            method, FailureReason.NO_CONVERGENCE, f"log β = {log_beta:.3f} at its bound"
        )
    return float(np.exp(log_beta))


def fit_temperature(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """β = 1/T minimising the NLL, by a bounded search over log β ∈ [−10, 10]."""
    name = "temperature"
    if data.has_vectors:
        bad = check_vectors(name, data, opts.min_samples)
        if bad is not None:
            return bad
        assert data.scores is not None and data.true_index is not None
        z = data.scores - data.scores.max(axis=1, keepdims=True)
        zt = z[np.arange(z.shape[0]), data.true_index]

        def nll_vec(beta: float) -> float:
            bz = beta * z
            lse = np.log(np.exp(bz).sum(axis=1))
            return float((lse - beta * zt).mean())

        found = _scalar_search(name, nll_vec)
        if isinstance(found, FitFailure):
            return found
        params = {"beta": found, "temperature": 1.0 / found}
        return Fitted(name, make_artifact(name, data.score_input, params, data.classes))
    bad = check_binary(name, data, opts.min_samples)
    if bad is not None:
        return bad
    # The binary score x = logit(c)/2 as the logit pair (−x, x): softmax gives σ(β·logit c).
    x = logit(data.confidences)
    y = data.correct.astype(np.float64)

    def nll_bin(beta: float) -> float:
        z = beta * x
        return float((np.logaddexp(0.0, z) - y * z).mean())

    found = _scalar_search(name, nll_bin)
    if isinstance(found, FitFailure):
        return found
    params = {"beta": found, "temperature": 1.0 / found}
    return Fitted(name, make_artifact(name, "confidence", params))


# --- Platt and beta ------------------------------------------------------------------------


def _smoothed_targets(correct: np.ndarray) -> FloatArray:
    n_pos = float(correct.sum())
    n_neg = float(correct.size - n_pos)
    return np.where(correct, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def fit_platt(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """σ(a·logit(c) + b) by logistic regression with Platt's smoothed targets."""
    name = "platt"
    bad = check_binary(name, data, opts.min_samples)
    if bad is not None:
        return bad
    x = np.column_stack([logit(data.confidences), np.ones(len(data))])
    coef = fit_logistic(x, _smoothed_targets(data.correct))
    if coef is None:
        return FitFailure(name, FailureReason.NO_CONVERGENCE, "Newton steps did not converge")
    return _nonfinite(name, coef) or Fitted(
        name, make_artifact(name, "confidence", {"a": coef[0], "b": coef[1]})
    )


def fit_beta(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """σ(a·ln s − b·ln(1−s) + c), unregularised; a negative a or b is set to 0 and refit."""
    name = "beta"
    bad = check_binary(name, data, opts.min_samples)
    if bad is not None:
        return bad
    s = np.clip(data.confidences, 1e-12, 1.0 - 1e-12)
    feats = np.column_stack([np.log(s), -np.log1p(-s), np.ones(len(data))])
    y = data.correct.astype(np.float64)
    coef = fit_logistic(feats, y)
    if coef is not None and (coef[0] < 0 or coef[1] < 0):
        keep = 1 if coef[0] < coef[1] else 0  # drop the negative (smaller) one
        sub = fit_logistic(feats[:, [keep, 2]], y)
        if sub is None:
            coef = None
        else:
            coef = np.zeros(3)
            coef[keep], coef[2] = max(sub[0], 0.0), sub[1]
    if coef is None:
        return FitFailure(name, FailureReason.NO_CONVERGENCE, "Newton steps did not converge")
    return _nonfinite(name, coef) or Fitted(
        name, make_artifact(name, "confidence", {"a": coef[0], "b": coef[1], "c": coef[2]})
    )


# --- isotonic and histogram binning ---------------------------------------------------------


def _merged(x: FloatArray, y: FloatArray, max_points: int) -> tuple[FloatArray, ...]:
    """Tied-merged points (x, mean y, weight); fine equal-width bins when too many."""
    ux, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if ux.size > max_points:
        inverse = np.minimum((x * max_points).astype(np.int64), max_points - 1)
        counts = np.bincount(inverse, minlength=max_points)
        sx = np.bincount(inverse, x, minlength=max_points)
        keep = counts > 0
        ux = sx[keep] / counts[keep]
        sy = np.bincount(inverse, y, minlength=max_points)[keep]
        return ux, sy / counts[keep], counts[keep].astype(np.float64)
    sy = np.bincount(inverse, y, minlength=ux.size)
    return ux, sy / counts, counts.astype(np.float64)


def isotonic_steps(x: FloatArray, y: FloatArray, max_points: int) -> tuple[FloatArray, FloatArray]:
    """Breakpoints of the increasing PAV fit, redundant interior points dropped."""
    ux, uy, w = _merged(x, y, max_points)
    fitted = optimize.isotonic_regression(uy, weights=w, increasing=True).x
    if fitted.size > 2:
        keep = np.ones(fitted.size, dtype=bool)
        keep[1:-1] = (fitted[:-2] != fitted[1:-1]) | (fitted[1:-1] != fitted[2:])
        ux, fitted = ux[keep], fitted[keep]
    return ux, np.asarray(fitted, dtype=np.float64)


def fit_isotonic(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """PAV on tied-merged points, clipped out of bounds, linear between steps.

    With vectors: one-vs-rest per class on p_k, rows renormalised at apply.
    """
    name = "isotonic"
    if data.has_vectors:
        bad = check_vectors(name, data, opts.min_samples)
        if bad is not None:
            return bad
        assert data.scores is not None and data.true_index is not None
        prob = np.exp(data.scores) if data.score_input == "probabilities" else None
        if prob is None:
            z = data.scores - data.scores.max(axis=1, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        prob = np.clip(prob, 0.0, 1.0)
        xs, ys = [], []
        for k in range(len(data.classes)):
            sx, sy = isotonic_steps(
                prob[:, k], (data.true_index == k).astype(np.float64), opts.isotonic_max_points
            )
            xs.append(sx)
            ys.append(sy)
        params = {"x": xs, "y": ys}
        return Fitted(name, make_artifact(name, "probabilities", params, data.classes))
    bad = check_binary(name, data, opts.min_samples)
    if bad is not None:
        return bad
    sx, sy = isotonic_steps(
        data.confidences, data.correct.astype(np.float64), opts.isotonic_max_points
    )
    return Fitted(name, make_artifact(name, "confidence", {"x": sx, "y": sy}))


def fit_histogram(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """M equal-width bins, each mapped to its accuracy; an empty bin to its midpoint."""
    name = "histogram"
    bad = check_binary(name, data, opts.min_samples)
    if bad is not None:
        return bad
    m = opts.histogram_bins
    idx = np.clip(np.floor(data.confidences * m).astype(np.int64), 0, m - 1)
    n = np.bincount(idx, minlength=m)
    pos = np.bincount(idx, data.correct.astype(np.float64), minlength=m)
    mid = (np.arange(m) + 0.5) / m
    values = np.where(n > 0, pos / np.maximum(n, 1), mid)
    return Fitted(name, make_artifact(name, "confidence", {"bins": m, "values": values}))


# --- vector scaling -------------------------------------------------------------------------


def fit_vector_scaling(data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """softmax(w ⊙ z + b) by L-BFGS on the NLL, a small ridge towards (w = 1, b = 0)."""
    name = "vector_scaling"
    bad = check_vectors(name, data, opts.min_samples)
    if bad is not None:
        return bad
    assert data.scores is not None and data.true_index is not None
    z = data.scores  # no per-row shift: w ⊙ (z − m) is not a shift of w ⊙ z
    n, k = z.shape
    rows = np.arange(n)
    onehot = np.zeros((n, k))
    onehot[rows, data.true_index] = 1.0
    lam = opts.vector_l2

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        w, b = theta[:k], theta[k:]
        s = z * w + b
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        tot = e.sum(axis=1, keepdims=True)
        q = e / tot
        loss = float((np.log(tot[:, 0]) - s[rows, data.true_index]).mean())
        diff = q - onehot
        gw = (diff * z).mean(axis=0) + 2 * lam * (w - 1.0)
        gb = diff.mean(axis=0) + 2 * lam * b
        loss += lam * float(np.square(w - 1.0).sum() + np.square(b).sum())
        return loss, np.concatenate([gw, gb])

    theta0 = np.concatenate([np.ones(k), np.zeros(k)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = optimize.minimize(
            objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500}
        )
    if not res.success:
        return FitFailure(name, FailureReason.NO_CONVERGENCE, f"L-BFGS: {res.message}")
    theta = np.asarray(res.x)
    params = {"w": theta[:k], "b": theta[k:] - theta[k:].mean()}
    return _nonfinite(name, theta) or Fitted(
        name, make_artifact(name, data.score_input, params, data.classes)
    )


METHODS: dict[str, Callable[[FitData, FitOptions], FitResult]] = {
    "temperature": fit_temperature,
    "platt": fit_platt,
    "isotonic": fit_isotonic,
    "histogram": fit_histogram,
    "beta": fit_beta,
    "vector_scaling": fit_vector_scaling,
}


def fit(method: str, data: FitData, opts: FitOptions = FitOptions()) -> FitResult:
    """Fit ``method``; never raises for bad data (an unknown method is a KeyError)."""
    try:
        return METHODS[method](data, opts)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return FitFailure(method, FailureReason.NON_FINITE, f"{type(exc).__name__}: {exc}")
