"""One calibration run, as a plain function of its calibration set and the current map.

Fit every configured method on the older part of the set, evaluate each on the newest
part (split by event time), keep the best by held-out NLL only if it passes the gate, and
advise retrain or recalibrate from the raw scores against the reference window. Nothing
here touches a store; :mod:`services.calibrator.runner` records what this returns.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.recalibration.appliers import build
from shared.recalibration.artifact import artifact_version
from shared.recalibration.data import FitFailure, Fitted, FloatArray
from shared.recalibration.gate import advise, discrimination, gate, held_out_metrics
from shared.recalibration.maps import IDENTITY, CalibrationMap, CalibratorError, from_registry
from shared.recalibration.methods import FitOptions, fit
from shared.recalibration.sets import CalibrationSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunConfig:
    methods: Sequence[str]
    min_samples: int
    holdout_fraction: float
    ece_slo: float
    bootstrap_resamples: int = 1000
    retrain_auc_drop: float = 0.1


@dataclass(slots=True)
class RunOutcome:
    verdict: str  # staged | not_staged | rejected | failed
    reason: str
    advice: str | None = None
    artifact: dict[str, Any] | None = None
    method: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_version(self) -> str | None:
        return None if self.artifact is None else artifact_version(self.artifact)


def current_map(
    calibrator_version: str, calibrator: str | Mapping[str, Any] | None
) -> CalibrationMap:
    """The map the policy applies now (identity when it cannot be built, as the policy does)."""
    try:
        return from_registry(calibrator_version, calibrator)
    except CalibratorError as exc:
        logger.warning("current calibrator unusable, comparing with identity: %s", exc)
        return IDENTITY


def _apply(m: CalibrationMap, cal: CalibrationSet, rows: Any) -> FloatArray:
    probs = cal.probabilities[rows] if cal.probabilities.shape[1] else None
    classes = list(cal.manifest.classes)
    return np.asarray(m.apply(cal.confidences[rows], probs, None, classes), dtype=np.float64)


def _seed(set_hash: str) -> int:
    return int(hashlib.sha256(set_hash.encode()).hexdigest()[:12], 16)


def _unusable(cal: CalibrationSet, config: RunConfig) -> str | None:
    """Why a set cannot be fitted at all, or None."""
    n = len(cal)
    if n < 2 * config.min_samples:
        return f"{n} labeled rows in the set, need {2 * config.min_samples}"
    if not np.isfinite(cal.confidences).all():
        bad = int((~np.isfinite(cal.confidences)).sum())
        return f"{bad} confidences in the set are not finite"
    truths = np.unique(cal.true_index[cal.true_index >= 0])
    if truths.size < 2 and (cal.true_index >= 0).all():
        return "one_class: every row has the same ground truth"
    if cal.correct.all() or not cal.correct.any():
        which = "right" if cal.correct.all() else "wrong"
        return f"one_class: every prediction in the set is {which}"
    return None


def _fit_candidates(
    cal: CalibrationSet, fit_rows: Any, hold_rows: Any, config: RunConfig
) -> tuple[dict[str, Any], tuple[float, Fitted, FloatArray] | None]:
    """Every configured method fitted on ``fit_rows`` and scored on ``hold_rows``: the
    candidates' summaries and the best by held-out NLL (None when none fitted)."""
    opts = FitOptions(min_samples=config.min_samples)
    train = cal.fit_data(fit_rows)
    correct = cal.correct[hold_rows]
    candidates: dict[str, Any] = {}
    best: tuple[float, Fitted, FloatArray] | None = None
    for method in config.methods:
        res = fit(method, train, opts)
        if isinstance(res, FitFailure):
            candidates[method] = {
                "fitted": False,
                "reason": str(res.reason),
                "message": res.message,
            }
            continue
        after = _apply(build(artifact_version(res.artifact), res.artifact), cal, hold_rows)
        if not np.isfinite(after).all():
            candidates[method] = {"fitted": False, "reason": "non_finite", "message": "output"}
            continue
        m = held_out_metrics(after, correct)
        candidates[method] = {
            "fitted": True,
            "version": artifact_version(res.artifact),
            "nll": m.nll,
            "brier": m.brier,
            "ece": m.ece,
        }
        if best is None or m.nll < best[0]:
            best = (m.nll, res, after)
    return candidates, best


def run_calibration(
    cal: CalibrationSet,
    reference: CalibrationSet | None,
    now_map: CalibrationMap,
    config: RunConfig,
) -> RunOutcome:
    """Fit, evaluate, gate and advise; every fault is a ``failed`` outcome with a reason."""
    n = len(cal)
    unusable = _unusable(cal, config)
    if unusable is not None:
        return RunOutcome("failed", unusable)
    fit_rows, hold_rows = cal.split_by_time(config.holdout_fraction)
    correct = cal.correct[hold_rows]
    before = _apply(now_map, cal, hold_rows)
    raw = cal.confidences[hold_rows]
    candidates, best = _fit_candidates(cal, fit_rows, hold_rows, config)
    result: dict[str, Any] = {
        "rows": {"set": n, "fit": int(fit_rows.size), "held_out": int(hold_rows.size)},
        "current_calibrator": now_map.version,
        "candidates": candidates,
    }
    advice = None
    if reference is not None and len(reference) > 0:
        adv = advise(
            discrimination(reference.confidences, reference.correct),
            discrimination(raw, correct),
            config.ece_slo,
            min_drop=config.retrain_auc_drop,
        )
        advice = adv.advice
        result["advice"] = adv.to_json()
    if best is None:
        reasons = "; ".join(f"{k}: {v['message']}" for k, v in candidates.items())
        result["before"] = held_out_metrics(before, correct).to_json()
        return RunOutcome("failed", f"no method fitted ({reasons})", advice, result=result)
    _, chosen, after = best
    verdict, mb, ma = gate(
        before,
        after,
        correct,
        config.min_samples,
        _seed(cal.hash),
        resamples=config.bootstrap_resamples,
    )
    result["before"], result["after"] = mb.to_json(), ma.to_json()
    result["gate"] = {"passed": verdict.passed, "reason": verdict.reason,
                      "interval": verdict.interval}  # fmt: skip
    if not verdict.passed:
        outcome = "rejected"
    elif advice == "retrain":
        outcome = "not_staged"
    else:
        outcome = "staged"
    reason = verdict.reason
    if outcome == "not_staged":
        reason = f"passed the gate ({verdict.reason}) but the advice is retrain"
    return RunOutcome(outcome, reason, advice, chosen.artifact, chosen.method, result)
