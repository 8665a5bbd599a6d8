"""Unregularised logistic regression with soft targets and weights, by damped Newton steps.

Small (2–3 columns), exact and deterministic: the maps Platt and beta calibration fit.
Returns None when it does not converge (separable data drives the coefficients to infinity).
"""

from __future__ import annotations

import numpy as np

from shared.recalibration.data import FloatArray

MAX_ITER = 100
TOL = 1e-10


def _loss(x: FloatArray, t: FloatArray, w: FloatArray, coef: FloatArray) -> float:
    z = x @ coef
    # −[t log σ(z) + (1 − t) log(1 − σ(z))] = log(1 + e^z) − t z
    return float((w * (np.logaddexp(0.0, z) - t * z)).sum())


def fit_logistic(
    x: FloatArray, targets: FloatArray, weights: FloatArray | None = None
) -> FloatArray | None:
    """Coefficients of P(y=1) = σ(x @ coef) minimising the weighted cross-entropy.

    ``x`` (N, d) includes the intercept column; ``targets`` in [0, 1].
    """
    w = np.ones(x.shape[0]) if weights is None else weights
    coef = np.zeros(x.shape[1])
    loss = _loss(x, targets, w, coef)
    for _ in range(MAX_ITER):
        z = x @ coef
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        grad = x.T @ (w * (p - targets))
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(x.shape[1]), grad)
        except np.linalg.LinAlgError:
            return None
        scale = 1.0
        while scale > 1e-8:
            trial = coef - scale * step
            trial_loss = _loss(x, targets, w, trial)
            if trial_loss <= loss + 1e-12 * abs(loss):
                break
            scale /= 2.0
        else:
            return None
        coef, loss = trial, trial_loss
        if not np.isfinite(coef).all():
            return None
        if float(np.abs(scale * step).max()) < TOL * (1.0 + float(np.abs(coef).max())):
            return coef
    return None
