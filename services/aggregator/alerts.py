"""Calibration alerts with hysteresis and cooldown, state kept in Redis.

Rules per model version, on the alert window:
- ``ece``: windowed ECE ≥ SLO → warning, ≥ 1.5 × SLO → critical;
- ``brier``: Brier more than 10 % above the model's baseline (its first window with enough
  labels) → warning, 15 % → critical;
- ``ece_control``: ECE above mean + 3σ of its own past evaluations (30 at least).

Performance before labels (kind ``performance``, from calibrated confidence; see
``shared.estimation.cbpe``), each with a ``reason`` in its details:
- ``estimated_error``: 1 − estimated accuracy above 1 − the model's floor;
- ``estimate_drop``: the estimate below the reference window's by more than the band of
  their difference (value in bands, threshold 1);
- ``estimate_gap``: labels show the estimate of the labeled predictions was off by more
  than its band (value in bands, threshold 1): the calibrator is stale, a trigger for
  recalibration.

A breach raises one alert. It clears (a ``resolved`` alert) only when the value falls below
90 % of the threshold, and after clearing the same rule stays quiet for the cooldown.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.alerts.machine import AlertMachine
from shared.contracts.batches import split_model_key
from shared.drift.stats import severity
from shared.estimation.cbpe import ConfidenceSums
from shared.runtime import redis_client
from shared.windows.calibration import alert_key

ALERT_NAMESPACE = uuid.UUID("5d7c0b8e-6a57-4f36-9a3c-1f2b8c4f9e21")
HYSTERESIS = 0.9
CONTROL_MIN_HISTORY = 30


@dataclass(frozen=True, slots=True)
class Breach:
    metric: str
    value: float
    threshold: float
    severity: str | None  # None = within bounds


__all__ = ["AlertState", "Breach", "Transition", "alert_record", "severity"]


class AlertState:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r = client
        self.p = f"{prefix}agg:"

    async def baseline_brier(self, model: str, current: float) -> float:
        key = alert_key(self.p, model, "", "baseline")
        await self.r.set(key, repr(current), nx=True)
        return float(await self.r.get(key) or current)

    async def reference_estimate(self, model: str, current: ConfidenceSums) -> ConfidenceSums:
        """The CBPE sums of the model's reference window: its first alert window with enough
        predictions, kept from then on (as the Brier baseline is)."""
        key = alert_key(self.p, model, "", "estimate-reference")
        await self.r.set(key, json.dumps([current.n, current.conf_sum, current.var_sum]), nx=True)
        raw = await self.r.get(key)
        if not raw:
            return current
        n, conf_sum, var_sum = json.loads(raw)
        return ConfidenceSums(int(n), float(conf_sum), float(var_sum))

    async def control_limit(self, model: str, ece: float) -> float | None:
        """mean + 3σ of past ECE evaluations (before adding this one)."""
        key = alert_key(self.p, model, "", "history")
        history = [float(v) for v in await self.r.lrange(key, 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(key, repr(ece))
        pipe.ltrim(key, -500, -1)
        await pipe.execute()
        if len(history) < CONTROL_MIN_HISTORY:
            return None
        return float(np.mean(history) + 3 * np.std(history))

    async def transition(
        self, model: str, breach: Breach, now_ms: int, cooldown_s: float
    ) -> Transition | None:
        """What the breach does to the rule's state: raise, resolve or nothing. The new state
        is returned, not saved: the caller saves it (``save``) once the alert is delivered,
        so a failed delivery raises the same alert again next round instead of losing it."""
        key = alert_key(self.p, model, breach.metric)
        raw = await self.r.get(key)
        state: dict[str, Any] = (
            json.loads(raw) if raw else {"active": False, "since": 0, "cleared": 0}
        )
        machine = AlertMachine(HYSTERESIS, cooldown_s)
        action = machine.step(state, breach.severity, breach.value, breach.threshold, now_ms)
        if action is None:
            return None
        return Transition(action, int(state["since"]), key, json.dumps(state))

    async def save(self, transitions: list[Transition]) -> None:
        if transitions:
            await redis_client.mset(self.r, {t.key: t.state for t in transitions})


@dataclass(frozen=True, slots=True)
class Transition:
    action: str
    """``raise`` or ``resolve``."""
    since_ms: int
    """When the breach this alert belongs to began."""
    key: str
    state: str


def alert_record(
    model: str,
    breach: Breach,
    kind: str,
    severity_: str,
    window: str,
    n: int,
    since_ms: int,
    now_ms: int,
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    tenant, name, version = split_model_key(model)
    alert_id = uuid.uuid5(ALERT_NAMESPACE, f"{model}|{breach.metric}|{since_ms}|{severity_}")
    return {
        "alert_id": str(alert_id),
        "tenant": tenant,
        "kind": kind,
        "severity": severity_,
        "model_name": name,
        "model_version": version,
        "model_version_id": None,
        "metric": breach.metric,
        "feature": None,
        "method": None,
        "value": breach.value,
        "threshold": breach.threshold,
        "window": window,
        "reference_version": None,
        "n_samples": n,
        "created_at_ms": now_ms,
        "details": dict(details or {}),
    }
