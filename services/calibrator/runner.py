"""The run loop: turn requests, schedules and promotions into queued runs, claim the next
run, compute it, record it, and announce every recorded run on ``<ns>.alerts``.

Announcements are published after the run's transaction commits and marked afterwards; a
crash in between publishes again, with the same alert id (derived from the run id), which
the recorder stores once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from services.calibrator.announce import publish_alerts
from services.calibrator.leader import Leadership
from services.calibrator.metrics import CalibratorMetrics
from services.calibrator.processing import RunConfig, current_map, run_calibration
from services.calibrator.rollout import RolloutManager
from services.calibrator.settings import CalibratorSettings
from services.calibrator.store import (
    CalibratorStore,
    Claimed,
    load_reference,
    load_set,
    now_ms,
    trigger_run_id,
)
from shared.contracts.batches import model_key
from shared.contracts.codec import AvroCodec
from shared.recalibration.methods import METHODS

logger = logging.getLogger(__name__)

ALERT_NAMESPACE = uuid.UUID("c3a1b9d2-7e44-4f0a-8d5e-0f1ca1b5ec00")


def announcement(row: Any) -> dict[str, Any]:
    """The ``recalibration`` Alert record of a recorded run."""
    result = json.loads(row["result"]) if row["result"] else {}
    before, after = result.get("before") or {}, result.get("after") or {}
    advice = result.get("advice") or {}
    details = {
        "run_id": str(row["run_id"]),
        "verdict": row["verdict"],
        "reason": row["reason"] or "",
        "trigger": row["trigger"],
        "advice": row["advice"] or "",
        "advice_reason": advice.get("reason", ""),
        "set_hash": row["set_hash"] or "",
        "artifact_version": row["artifact_version"] or "",
        "ece_before": str(before.get("ece", "")),
        "ece_after": str(after.get("ece", "")),
        "nll_before": str(before.get("nll", "")),
        "nll_after": str(after.get("nll", "")),
    }
    return {
        "alert_id": str(uuid.uuid5(ALERT_NAMESPACE, str(row["run_id"]))),
        "tenant": row["tenant_id"],
        "kind": "recalibration",
        "severity": "critical" if row["advice"] == "retrain" else "warning",
        "model_name": row["model_name"],
        "model_version": row["model_version"],
        "model_version_id": row["model_version_id"],
        "metric": "ece",
        "feature": None,
        "method": (row["artifact_version"] or "").split("-")[0] or None,
        "value": float(after.get("ece", before.get("ece", 0.0)) or 0.0),
        "threshold": float(before.get("ece", 0.0) or 0.0),
        "window": "calibration-set",
        "reference_version": None,
        "n_samples": int((result.get("rows") or {}).get("held_out", 0)),
        "created_at_ms": int(row["finished_at"].timestamp() * 1000),
        "details": details,
    }


class Runner:
    def __init__(
        self,
        settings: CalibratorSettings,
        store: CalibratorStore,
        producer: Producer,
        codec: AvroCodec,
        alerts_topic: str,
        metrics: CalibratorMetrics | None = None,
        rollouts: RolloutManager | None = None,
        leader: Leadership | None = None,
    ) -> None:
        unknown = sorted(set(settings.calibrator_methods) - set(METHODS))
        if unknown:
            raise ValueError(
                f"CALIBER_CALIBRATOR_METHODS names unknown methods {unknown}; "
                f"expected some of {sorted(METHODS)}"
            )
        self.settings = settings
        self.store = store
        self.producer = producer
        self.codec = codec
        self.alerts_topic = alerts_topic
        self.metrics = metrics
        self.rollouts = rollouts
        self.leader = leader
        """None: this runner alone (tests); otherwise only the leader gathers, announces
        and steps rollouts."""

    def config(self, methods: list[str] | None) -> RunConfig:
        s = self.settings
        return RunConfig(
            methods=methods or s.calibrator_methods,
            min_samples=s.calibrator_min_samples,
            holdout_fraction=s.calibrator_holdout_fraction,
            ece_slo=s.calibrator_ece_slo,
            bootstrap_resamples=s.calibrator_bootstrap_resamples,
            retrain_auc_drop=s.calibrator_retrain_auc_drop,
        )

    async def gather_triggers(self) -> None:
        for req in await self.store.requests():
            model = await self.store.model_by_id(req["model_version_id"])
            if model is None:
                continue
            detail = {"methods": req["methods"], "window_seconds": req["window_seconds"]}
            await self.store.enqueue(req["run_id"], model, "manual", detail)
        due = await self.store.due(
            self.settings.calibrator_schedule_seconds,
            self.settings.calibrator_on_promotion,
            2 * self.settings.calibrator_min_samples,
        )
        for model, trigger, detail in due:
            run_id = trigger_run_id(model.tenant, model.id, trigger, detail)
            await self.store.enqueue(run_id, model, trigger, detail)

    async def run_one(self, claimed: Claimed) -> str:
        """Compute and record one claimed run; returns its verdict."""
        started = time.monotonic()
        model, detail = claimed.model, claimed.trigger_detail
        window_s = int(detail.get("window_seconds") or self.settings.calibrator_window_seconds)
        methods = detail.get("methods") or None
        end = now_ms()
        async with self.store.pool.acquire() as conn:
            cal = await load_set(
                conn, model, end - window_s * 1000, end, end, self.settings.calibrator_max_rows
            )
            reference = await load_reference(conn, model, self.settings.calibrator_reference_rows)
        now = current_map(model.calibrator_version, model.calibrator)
        outcome = await asyncio.to_thread(
            run_calibration, cal, reference, now, self.config(methods)
        )
        outcome.result["trigger"] = {"trigger": claimed.trigger, **detail}
        outcome.result["set_hash"] = cal.hash
        await self.store.record(
            claimed.run_id, cal, outcome.verdict, outcome.reason, outcome.advice,
            outcome.result, outcome.artifact, outcome.artifact_version, model,
        )  # fmt: skip
        logger.info(
            "run %s of %s: %s (%s), advice %s",
            claimed.run_id, model_key(model.tenant, model.name, model.version),
            outcome.verdict, outcome.reason, outcome.advice,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.runs.labels(outcome.verdict).inc()
            self.metrics.run_seconds.observe(time.monotonic() - started)
        return outcome.verdict

    async def announce(self) -> int:
        rows = await self.store.unannounced()
        if not rows:
            return 0
        alerts = [
            (model_key(r["tenant_id"], r["model_name"], r["model_version"]), announcement(r))
            for r in rows
        ]
        if not await publish_alerts(
            self.producer, self.alerts_topic, self.codec, alerts, "announcements"
        ):
            return 0
        await self.store.mark_announced([r["run_id"] for r in rows])
        return len(rows)

    async def step(self) -> bool:
        """One round; True when it ran a run (so the loop goes on without sleeping). Every
        replica runs claimed runs; the leader alone does the rest (one announcement, one
        rollout step)."""
        leading = self.leader is None or await self.leader.leading()
        if leading:
            await self.gather_triggers()
            requeued = await self.store.requeue_running()
            if requeued:
                logger.warning("%d runs a dead replica left running are queued again", requeued)
        claimed = await self.store.claim()
        ran = False
        if claimed is not None:
            try:
                await self._run_leased(claimed)
            finally:
                await self.store.release(claimed)
            ran = True
        if leading:
            await self.announce()
            if self.rollouts is not None:
                await self.rollouts.step()
        return ran

    async def _run_leased(self, claimed: Claimed) -> None:
        try:
            await self.run_one(claimed)
        except Exception as exc:  # recorded as a failed run, never left half-done
            logger.exception("run %s failed", claimed.run_id)
            await self.store.record(
                claimed.run_id, None, "failed", f"internal error: {exc!r}"[:500], None,
                {"trigger": {"trigger": claimed.trigger, **claimed.trigger_detail}},
                None, None, claimed.model,
            )  # fmt: skip

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await self._loop(stopping)
        finally:
            if self.leader is not None:
                await self.leader.close()

    async def _loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                ran = await self.step()
            except Exception:  # one run's fault must not stop the worker
                logger.exception("calibration round failed; retrying")
                ran = False
            if not ran:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.settings.calibrator_poll_seconds)
