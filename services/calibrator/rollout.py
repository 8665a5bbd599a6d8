"""The rollout state machine: staged → shadow → canary → promoted, or rolled back.

The calibrator is its one owner (docs/architecture.md, "Owners of tables and key spaces").
Each round it handles the operators' requests, opens a shadow rollout for a newly staged
calibrator, and moves every open rollout on from the paired statistics the aggregator keeps
(``shared.windows.rollout``) by the always-valid test of ``shared.recalibration.sequential``:

- shadow: rolled back when the candidate is shown worse (or its review rate leaves the
  band); on to canary once ``shadow_min_labeled`` paired labeled events arrived;
- canary: promoted when shown better (once the canary arm itself has
  ``canary_min_labeled`` labeled events), rolled back when shown worse, ``inconclusive``
  (the active map stays) at the test's maximum of labeled events.

Every transition is a row of ``rollout_transitions`` (the numbers that decided it), which
the gateway applies to the registry through its outbox (an event on ``<ns>.model-updates``),
and a ``recalibration`` alert.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from confluent_kafka import Producer

from services.calibrator.announce import publish_alerts
from services.calibrator.rollout_store import OPEN_STAGES, Rollout, RolloutStore, Transition
from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec
from shared.recalibration.sequential import (
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    SequentialConfig,
    Verdict,
    decide,
)
from shared.windows.rollout import RolloutStats, read_rollout

logger = logging.getLogger(__name__)

TRANSITION_NAMESPACE = uuid.UUID("0f7d3a52-5a1e-4c3b-9e0a-6b1c2d3e4f50")


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    test: SequentialConfig
    shadow_min_labeled: int = 100
    canary_share: float = 0.1
    auto_start: bool = True
    canary_min_labeled: int = 100
    """Labeled events the canary arm itself decided before a promotion: the candidate has
    served real traffic, not only run beside it."""


def numbers_of(stats: RolloutStats, verdict: Verdict | None) -> dict[str, Any]:
    """What an audit row keeps of the statistics that decided a transition."""

    def m(x: Any) -> dict[str, Any]:
        return {k: getattr(x, k) for k in ("n", "ece", "brier", "nll", "aurc", "review_rate")}

    out: dict[str, Any] = {
        "events": stats.events,
        "labeled": stats.labeled,
        "active": m(stats.active),
        "candidate": m(stats.candidate),
        "review_rate_delta": stats.review_rate_delta,
        "canary": {"events": stats.canary.events, "labeled": stats.canary.labeled,
                   "ece": stats.canary.ece},
        "control": {"events": stats.control.events, "labeled": stats.control.labeled,
                    "ece": stats.control.ece},
    }  # fmt: skip
    if verdict is not None:
        out["test"] = verdict.to_json()
    return out


def next_move(rollout: Rollout, stats: RolloutStats, config: RolloutConfig) -> Transition | None:
    """The automatic transition the statistics call for, or None (keep collecting)."""
    band_known = stats.events >= config.test.min_events
    verdict = decide(
        stats.nll_diff,
        stats.brier_diff,
        config.test,
        stats.review_rate_delta if band_known else None,
    )
    numbers = numbers_of(stats, verdict)
    if verdict.decision == ROLLBACK:
        return Transition("rolled_back", "auto", verdict.reason, numbers)
    if rollout.stage == "shadow":
        if stats.labeled >= config.shadow_min_labeled:
            return Transition(
                "canary", "auto",
                f"{stats.labeled} paired labeled events in shadow, none shown worse",
                numbers, config.canary_share,
            )  # fmt: skip
        return None
    if verdict.decision == PROMOTE:
        if stats.canary.labeled < config.canary_min_labeled:
            return None
        return Transition("promoted", "auto", verdict.reason, numbers)
    if verdict.decision == INCONCLUSIVE:
        return Transition("inconclusive", "auto", verdict.reason, numbers)
    return None


def registry_move(rollout: Rollout, stats: RolloutStats) -> Transition | None:
    """The end of an open rollout whose model version's active calibrator was set directly
    (``POST /api/models/{id}/calibrator``), or None when it was not.

    Activating the candidate promotes it. Activating another calibrator aborts the rollout:
    the paired statistics compare the candidate with the map that was active when it
    started, and a later promotion would silently undo the operator's choice.
    """
    active = rollout.active_version
    if active == rollout.candidate_version:
        return Transition(
            "promoted", "manual", "activated directly through the registry",
            numbers_of(stats, None),
        )  # fmt: skip
    if not active or active == rollout.previous_version:
        return None
    return Transition(
        "aborted", "manual",
        f"{active} was activated directly through the registry in place of "
        f"{rollout.previous_version}, the map the candidate was compared with",
        numbers_of(stats, None),
    )  # fmt: skip


def transition_alert(row: Any) -> dict[str, Any]:
    """The ``recalibration`` Alert of one recorded transition."""
    numbers = json.loads(row["numbers"]) if row["numbers"] else {}
    test = numbers.get("test") or {}
    nll = test.get("nll") or {}
    bad = row["to_stage"] in ("rolled_back", "aborted", "inconclusive")
    details = {
        "transition_id": str(row["id"]),
        "from_stage": row["from_stage"],
        "to_stage": row["to_stage"],
        "candidate_version": row["candidate_version"],
        "trigger": row["trigger"],
        "reason": row["reason"],
        "labeled": str(numbers.get("labeled", "")),
        "nll_diff_lo": str(nll.get("lo", "")),
        "nll_diff_hi": str(nll.get("hi", "")),
    }
    return {
        "alert_id": str(uuid.uuid5(TRANSITION_NAMESPACE, f"{row['tenant_id']}|{row['id']}")),
        "tenant": row["tenant_id"],
        "kind": "recalibration",
        "severity": "critical" if bad else "warning",
        "model_name": row["name"],
        "model_version": row["version"],
        "model_version_id": row["model_version_id"],
        "metric": "rollout",
        "feature": None,
        "method": row["candidate_version"].split("-")[0] or None,
        "value": float(nll.get("mean", 0.0) or 0.0),
        "threshold": 0.0,
        "window": row["to_stage"],
        "reference_version": None,
        "n_samples": int(numbers.get("labeled", 0) or 0),
        "created_at_ms": int(row["created_at"].timestamp() * 1000),
        "details": details,
    }


class RolloutManager:
    def __init__(
        self,
        store: RolloutStore,
        redis: aioredis.Redis,
        redis_prefix: str,
        config: RolloutConfig,
        producer: Producer,
        codec: AvroCodec,
        alerts_topic: str,
    ) -> None:
        self.store = store
        self.redis = redis
        self.prefix = redis_prefix
        self.config = config
        self.producer = producer
        self.codec = codec
        self.alerts_topic = alerts_topic

    async def stats(self, rollout: Rollout) -> RolloutStats:
        return await read_rollout(
            self.redis, self.prefix, rollout.model_key, rollout.candidate_version
        )

    async def start_staged(self) -> int:
        started = 0
        for s in await self.store.staged_waiting():
            t = Transition("shadow", "auto", f"staged by run {s['run_id']}", {})
            if await self.store.start(
                s["tenant_id"], s["model_version_id"], s["artifact_version"], s["run_id"], t
            ):
                started += 1
        return started

    async def advance(self) -> int:
        moved = 0
        for rollout in await self.store.open_rollouts():
            stats = await self.stats(rollout)
            move = registry_move(rollout, stats) or next_move(rollout, stats, self.config)
            if move is not None and await self.store.move(rollout, move) is not None:
                logger.info(
                    "rollout of %s on %s: %s → %s (%s)", rollout.candidate_version,
                    rollout.model_key, rollout.stage, move.to_stage, move.reason,
                )  # fmt: skip
                moved += 1
        return moved

    async def handle_requests(self) -> None:
        for req in await self.store.requests():
            refusal = await self.handle(req)
            if refusal is not None:
                await self.store.refuse(req["request_id"], refusal)

    async def handle(self, req: Any) -> str | None:
        """Carry out one operator request; the reason it cannot be, or None."""
        tenant, model_id, action = req["tenant_id"], req["model_version_id"], req["action"]
        share = req["canary_share"] if req["canary_share"] is not None else self.config.canary_share
        rid = req["request_id"]
        open_ = await self.store.open_of(tenant, model_id)
        reason = f"requested by an operator ({action})"
        if action in ("shadow", "canary") and open_ is None:
            if not req["artifact_version"]:
                return "no rollout is open and no artifact_version was named"
            t = Transition(action, "manual", reason, {}, share if action == "canary" else 0.0, rid)
            ok = await self.store.start(tenant, model_id, req["artifact_version"], None, t)
            return None if ok else f"{req['artifact_version']} was rolled out before"
        if open_ is None and action == "rollback":
            promoted = await self.store.last_promoted(tenant, model_id)
            if promoted is None:
                return "no rollout is open and no promoted calibrator to roll back"
            open_ = promoted
        if open_ is None:
            return f"no rollout is open for {action}"
        to = {"shadow": "shadow", "canary": "canary", "promote": "promoted",
              "abort": "aborted", "rollback": "rolled_back"}[action]  # fmt: skip
        numbers = numbers_of(await self.stats(open_), None) if open_.stage in OPEN_STAGES else {}
        t = Transition(to, "manual", reason, numbers, share if to == "canary" else 0.0, rid)
        moved = await self.store.move(open_, t)
        return None if moved is not None else "the rollout moved meanwhile; ask again"

    async def announce(self) -> int:
        rows = await self.store.unannounced()
        if not rows:
            return 0
        alerts = [
            (model_key(r["tenant_id"], r["name"], r["version"]), transition_alert(r)) for r in rows
        ]
        if not await publish_alerts(
            self.producer, self.alerts_topic, self.codec, alerts, "rollout alerts"
        ):
            return 0
        await self.store.mark_announced([r["id"] for r in rows])
        return len(rows)

    async def step(self) -> None:
        await self.handle_requests()
        if self.config.auto_start:
            await self.start_staged()
        await self.advance()
        await self.announce()


def config_json(config: RolloutConfig) -> dict[str, Any]:
    return asdict(config)
