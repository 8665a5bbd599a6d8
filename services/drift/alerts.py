"""When a drift score becomes an alert: severity, hysteresis and cooldown, per feature.

Each profiled part (feature, ``__confidence__``, ``__predicted_label__``) alerts on one
method: PSI for numbers and the confidence, chi-squared (Cohen's w) for categories and the
predicted-label mix. Severity is ``shared.drift.stats.severity``: ≥ threshold warning,
≥ 1.5 × threshold critical. A trusted score at or above the threshold raises ONE alert and
the feature stays active while it drifts (a later escalation to critical is kept in the
state, not re-sent); it recovers, recorded as a ``resolved`` alert, only once its score
falls below ``HYSTERESIS`` × threshold, and then stays quiet for the cooldown. A
chi-squared score must also be significant (p-value ≤ the configured maximum, 0.001 by
default) to raise: Cohen's w of a small window is inflated by sampling noise (its expected
square is dof / n), so a large effect on few samples is not enough on its own. The default
w threshold 0.3 (Cohen's "medium") sits well above that noise, which with a fixed reference
of N events is about √(dof · (1/n + 1/N)): 0.03 for three labels, 0.14 for 50 categories,
for n = 6,000 and N = 5,000 (w² is close to PSI for small shifts, so 0.3 is about as
sensitive as PSI 0.09). Times are
the model version's event-time watermark, so a replayed evaluation decides the same way
and names its alert with the same id. Untrusted scores (too few samples) change nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.alerts.machine import AlertMachine
from shared.contracts.batches import split_model_key
from shared.drift.scores import DriftMethod, DriftScore
from shared.drift.stats import severity

ALERT_NAMESPACE = uuid.UUID("0e4f7a52-3b1d-4c8e-9f60-7d2a9b1c5e34")
HYSTERESIS = 0.8


def primary_method(score: DriftScore) -> bool:
    return score.method in (DriftMethod.PSI, DriftMethod.CHI_SQUARED)


@dataclass(frozen=True, slots=True)
class Transition:
    action: str
    """``raise`` or ``resolve``."""
    severity: str
    """warning | critical | resolved"""
    since_ms: int
    """Watermark at which the breach began (names the alert)."""


def transition(
    state: dict[str, Any] | None,
    score: DriftScore,
    threshold: float,
    now_ms: int,
    cooldown_s: float,
    max_p_value: float = 1.0,
) -> tuple[dict[str, Any], Transition | None]:
    """The feature's new alert state and the alert to send, if any."""
    s = dict(state or {"active": False, "since": 0, "cleared": None, "severity": None})
    if not score.trusted:
        return s, None
    sev = severity(score.score, threshold)
    if score.p_value is not None and score.p_value > max_p_value:
        sev = None
    since = int(s["since"])
    machine = AlertMachine(HYSTERESIS, cooldown_s, tracks_severity=True)
    action = machine.step(s, sev, score.score, threshold, now_ms)
    if action == "raise":
        return s, Transition("raise", s["severity"], now_ms)
    if action == "resolve":
        return s, Transition("resolve", "resolved", since)
    return s, None


def alert_record(
    model: str,
    model_version_id: int | None,
    score: DriftScore,
    threshold: float,
    change: Transition,
    window: str,
    now_ms: int,
    details: dict[str, str],
) -> dict[str, Any]:
    tenant, name, version = split_model_key(model)
    ident = f"{model}|{score.feature}|{change.since_ms}|{change.action}"
    return {
        "alert_id": str(uuid.uuid5(ALERT_NAMESPACE, ident)),
        "tenant": tenant,
        "kind": "drift",
        "severity": change.severity,
        "model_name": name,
        "model_version": version,
        "model_version_id": model_version_id,
        "metric": str(score.method),
        "feature": score.feature,
        "method": str(score.method),
        "value": score.score,
        "threshold": threshold,
        "window": window,
        "reference_version": score.reference_version,
        "n_samples": score.n_samples,
        "created_at_ms": now_ms,
        "details": details,
    }
