"""The alert state machine: one rule of one model version (or one feature of it) at a time.

A breach raises ONE alert; the rule stays active while it is breached and clears (a
``resolved`` alert) only once its value falls below ``hysteresis × threshold``; after
clearing, the same rule stays quiet for ``cooldown_s``. The calibration alerts (aggregator)
and the drift alerts (drift worker) are this machine with different factors
(docs/architecture.md, "Alerts").

The state is a JSON-ready dict kept by the caller (in its own Redis key space): ``active``,
``since`` (when the breach began, ms), ``cleared`` (when it last cleared, ms; 0 or None =
never) and ``severity``. It is changed in place; the caller saves it once the alert is
delivered, so a failed delivery raises the same alert again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["raise", "resolve"]


@dataclass(frozen=True, slots=True)
class AlertMachine:
    hysteresis: float
    """A breached rule clears only below this share of its threshold."""
    cooldown_s: float
    """After clearing, how long the rule stays quiet."""
    tracks_severity: bool = False
    """Keep the current severity in the state: an escalation to critical while active is
    recorded (not re-sent) and clearing forgets it. Otherwise the state keeps the severity
    the alert was raised with."""

    def step(
        self,
        state: dict[str, Any],
        severity: str | None,
        value: float,
        threshold: float,
        now_ms: int,
    ) -> Action | None:
        """Apply one evaluation (``severity`` None = within bounds) to ``state``; the alert
        to send, if any."""
        if not state["active"]:
            cleared = state["cleared"]
            quiet = cleared is None or now_ms - cleared >= self.cooldown_s * 1000
            if severity is not None and quiet:
                state.update(active=True, since=now_ms, severity=severity)
                return "raise"
            return None
        if value < self.hysteresis * threshold:
            state.update(active=False, cleared=now_ms)
            if self.tracks_severity:
                state["severity"] = None
            return "resolve"
        if self.tracks_severity and severity == "critical":
            state["severity"] = severity
        return None
