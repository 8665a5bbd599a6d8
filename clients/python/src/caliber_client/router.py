"""The router's client: which path serves a request, and how it went.

``decide`` asks ``POST /api/route/decide``; when the router cannot be reached (connection
refused, timeout, 5xx) it answers the first candidate itself, marked ``fallback`` and
``local`` (no decision was recorded, so it takes no outcome), as the router does when its
own state is unreachable. ``report`` sends an outcome (``POST /api/route/outcome``) at any
time within the label horizon, by decision id, so a late outcome needs only the id kept.
A prediction sent with the decision id (``Caliber.send(..., decision_id=...)``) makes its
label the outcome, with no ``report`` at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caliber_client.errors import CaliberError, RejectedError
from caliber_client.http import Api

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    path: str
    cost: float | None = None
    latency_ms: float | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.cost is not None:
            out["cost"] = self.cost
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str | None
    """None for a local fallback: nothing was recorded."""
    goal: str
    path: str
    forced: bool = False
    fallback: bool = False
    local: bool = False
    """True when the client answered itself because the router was unreachable."""


class RouterClient:
    def __init__(self, api: Api, timeout: float = 1.0) -> None:
        self._api = api
        self.timeout = timeout

    def decide(
        self,
        goal: str,
        candidates: Sequence[str | Candidate],
        force: str | None = None,
    ) -> Decision:
        """The path to take; never raises for an unreachable router (first candidate)."""
        cands = [c if isinstance(c, Candidate) else Candidate(c) for c in candidates]
        if not cands:
            raise ValueError("candidates: give at least one path")
        body: dict[str, Any] = {"goal": goal, "candidates": [c.body() for c in cands]}
        if force is not None:
            body["force"] = force
        try:
            r = self._api.request(
                "POST", "/api/route/decide", json=body, retries=0, timeout=self.timeout
            )
        except RejectedError:
            raise
        except CaliberError as exc:
            logger.warning("caliber: router unreachable (%s); first candidate %r taken",
                           exc, cands[0].path)  # fmt: skip
            path = force if force is not None else cands[0].path
            return Decision(None, goal, path, forced=force is not None, fallback=True, local=True)
        return Decision(r["decision_id"], r["goal"], r["path"], r["forced"], r["fallback"])

    def report(
        self,
        decision: Decision | str,
        success: bool | None = None,
        score: float | None = None,
    ) -> bool:
        """Send the outcome of a decision (``success`` or a ``score`` in [0, 1]).

        False when the decision was a local fallback (nothing to report to) or already has
        its outcome (the router counts one per decision: 409), so a retry never counts twice.
        """
        decision_id = decision if isinstance(decision, str) else decision.decision_id
        if decision_id is None:
            logger.info("caliber: a local fallback decision takes no outcome")
            return False
        if (success is None) == (score is None):
            raise ValueError("give exactly one of success or score")
        body: dict[str, Any] = {"decision_id": decision_id}
        if success is not None:
            body["success"] = success
        else:
            body["score"] = score
        try:
            self._api.request("POST", "/api/route/outcome", json=body)
        except RejectedError as exc:
            if exc.status != 409:
                raise
            logger.info("caliber: decision %s already has its outcome", decision_id)
            return False  # counted once already (perhaps by a retry whose answer was lost)
        return True

    def force(self, goal: str, candidates: Sequence[str | Candidate], path: str) -> Decision:
        """Take ``path``: recorded as forced, not learned from."""
        return self.decide(goal, candidates, force=path)
