"""Periodic evaluation: metric snapshots to Kafka, Prometheus gauges, and alerts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from redis.exceptions import RedisError

from services.aggregator.alerts import AlertState, Breach, Transition, alert_record, severity
from services.aggregator.metrics import (
    MAX_EXPORTED,
    RISK_COVERAGES,
    AggregatorMetrics,
)
from services.aggregator.settings import AggregatorSettings
from shared.alerts.publish import publish_alerts
from shared.contracts.batches import split_model_key
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.estimation.cbpe import ConfidenceSums, drop_in_bands, estimate
from shared.estimation.report import report
from shared.runtime.observability import RoundSeries
from shared.runtime.ownership import OwnerFence, Ownership
from shared.runtime.rounds import TRANSIENT, run_rounds
from shared.windows.calibration import (
    GRANULARITY,
    Calibration,
    RiskCoverageAnswer,
    WindowReader,
    pending_slot_seconds,
)
from shared.windows.names import SNAPSHOT_WINDOWS, WINDOW_SECONDS

logger = logging.getLogger(__name__)


def estimate_floor(settings: AggregatorSettings, model: str) -> float:
    """The model version's estimated-accuracy floor: its own, its model's, or the default."""
    floors = settings.estimate_floors
    tenant, name, _ = split_model_key(model)
    return floors.get(model, floors.get(f"{tenant}/{name}", settings.estimate_floor))


class Evaluator:
    def __init__(
        self,
        settings: AggregatorSettings,
        reader: WindowReader,
        state: AlertState,
        producer: Producer,
        codec: AvroCodec,
        metrics: AggregatorMetrics | None = None,
        activity: Callable[[], int] | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.ownership = ownership or Ownership.sole(
            OwnerFence(state.r, f"{settings.redis_prefix}agg:")
        )
        """The model versions this replica evaluates, and the fence of its writes."""
        self.activity = activity
        """Events and labels this process has counted so far; None: evaluate every round."""
        self._last_mark: tuple[int, int, int] | None = None
        self.reader = reader
        self.state = state
        self.producer = producer
        self.codec = codec
        self.metrics = metrics
        self.series = RoundSeries()
        self.topics = Topics.for_namespace(settings.topic_namespace)
        if metrics is not None:
            metrics.ece_slo.set(settings.ece_slo)

    async def run(self, stopping: asyncio.Event) -> None:
        await run_rounds(
            "evaluation",
            self.evaluate_if_changed,
            self.settings.snapshot_interval_seconds,
            stopping,
            logger,
            (*TRANSIENT, RedisError),
            wake=self.ownership.wake,
        )

    async def evaluate_if_changed(self, now_ms: int) -> list[dict[str, Any]]:
        """:meth:`evaluate`, unless nothing was counted since the last round and no time
        boundary that changes a figure has passed: every window sums minute (or coarser)
        buckets, a pending count drops a whole arrival slot at once, and an alert's cooldown
        is tracked to within a minute, or to within the cooldown when that is shorter.
        Until one of these changes, a round would compute, publish and export the same
        figures again; an idle worker then evaluates about once a minute, not every round."""
        mark = None
        if self.ownership.take_wake():
            self._last_mark = None  # new partitions: their model versions at once
        if self.activity is not None:
            s = self.settings
            now_s = now_ms // 1000
            period = max(1, int(min(GRANULARITY["m"], s.alert_cooldown_seconds)))
            slot = pending_slot_seconds(s.label_horizon_seconds)
            mark = (self.activity(), now_s // period, (now_s - s.label_horizon_seconds) // slot)
            if mark == self._last_mark:
                return []
        alerts = await self.evaluate(now_ms)
        self._last_mark = mark
        return alerts

    async def evaluate(self, now_ms: int) -> list[dict[str, Any]]:
        """One round over the model versions this replica owns; returns the alerts it raised
        or resolved (docs/architecture.md, "Replicas and ownership")."""
        alerts: list[dict[str, Any]] = []
        sent: dict[str, list[str]] = {}
        self.series.begin()
        async with self.ownership.round():
            for rank, model in enumerate(await self.reader.models()):
                token = await self.ownership.token(model)
                if token is None:
                    continue
                raised = await self._model(model, token, now_ms, rank < MAX_EXPORTED)
                if raised is None:
                    continue
                alerts += raised[0]
                sent[model] = raised[1]
            # Snapshots and the outboxes' alerts, all acknowledged before any leaves its outbox.
            await publish_alerts(self.producer, self.topics.alerts, self.codec, [])
            for model, ids in sent.items():
                await self.ownership.fence.delivered(model, ids)
        self.series.end()
        return alerts

    async def _model(
        self, model: str, token: int, now_ms: int, rank_exported: bool
    ) -> tuple[list[dict[str, Any]], list[str]] | None:
        """Evaluate one owned model version and produce its snapshots and alerts (not yet
        flushed); (the alerts it raised or resolved, the outbox ids produced), or None when
        a later owner's token refused its write (nothing produced)."""
        export = self.metrics is not None and rank_exported
        pending = await self.reader.labels_pending(
            model, self.settings.label_horizon_seconds, now_ms // 1000
        )
        answers = {}
        snapshots = []
        for window in SNAPSHOT_WINDOWS:
            cal = await self.reader.calibration(model, window, now_ms // 1000)
            rc = await self.reader.risk_coverage(model, window, now_ms // 1000)
            answers[window] = cal
            snapshots.append(self._snapshot(model, window, cal, rc, pending, now_ms))
            if export:
                self._export(model, window, cal, rc)
        if export:
            assert self.metrics is not None
            self.series.set(self.metrics.labels_pending, (model,), pending)
        window = self.settings.alert_window
        cal = answers.get(window) or await self.reader.calibration(model, window, now_ms // 1000)
        raised, changed = await self._alerts(model, cal, now_ms, export)
        more, changed_too = await self._performance_alerts(model, now_ms, export)
        raised += more
        changed += changed_too
        outbox = await self.ownership.fence.save(
            model,
            token,
            {t.key: t.state for t in changed},
            {a["alert_id"]: self.codec.encode("Alert", a) for a in raised},
        )
        if outbox is None:
            self.ownership.refused(model)
            return None
        key = model.encode()
        for snapshot in snapshots:
            self.producer.produce(self.topics.metrics, snapshot, key)
        for value in outbox.values():
            self.producer.produce(self.topics.alerts, value, key)
        if self.metrics is not None:
            for a in raised:
                self.metrics.alerts.labels(a["metric"], a["severity"]).inc()
        return raised, list(outbox)

    async def _alerts(
        self, model: str, cal: Calibration, now_ms: int, export: bool = False
    ) -> tuple[list[dict[str, Any]], list[Transition]]:
        s = self.settings
        if cal.n_labeled < s.alert_min_labeled or cal.ece is None or cal.brier is None:
            return [], []
        breaches = [Breach("ece", cal.ece, s.ece_slo, severity(cal.ece, s.ece_slo))]
        base = await self.state.baseline_brier(model, cal.brier)
        if base > 0:
            rise = cal.brier / base - 1.0
            breaches.append(Breach("brier", cal.brier, base * 1.10, severity(rise, 0.10)))
        limit = await self.state.control_limit(model, cal.ece)
        if limit is not None:
            breaches.append(
                Breach("ece_control", cal.ece, limit, "warning" if cal.ece > limit else None)
            )
        if export and self.metrics is not None:
            self.series.set(self.metrics.brier_baseline, (model,), base)
            if limit is not None:
                self.series.set(self.metrics.ece_control_limit, (model,), limit)
        out = []
        changed = []
        for b in breaches:
            t = await self.state.transition(model, b, now_ms, s.alert_cooldown_seconds)
            if t is None:
                continue
            changed.append(t)
            since = t.since_ms
            sev = b.severity if t.action == "raise" and b.severity else "resolved"
            kind = "calibration" if b.metric.startswith("ece") else "performance"
            out.append(
                alert_record(model, b, kind, sev, s.alert_window, cal.n_labeled, since, now_ms)
            )
        return out, changed

    async def _performance_alerts(
        self, model: str, now_ms: int, export: bool = False
    ) -> tuple[list[dict[str, Any]], list[Transition]]:
        """Before-labels rules on the alert window (see ``services.aggregator.alerts``)."""
        s = self.settings
        window = s.alert_window
        rep = report(
            await self.reader.totals(model, window, now_ms // 1000), window, s.estimate_band_z
        )
        est, lab = rep.estimated, rep.labeled
        if export and self.metrics is not None:
            if est is not None:
                self.series.set(self.metrics.estimated_accuracy, (model, window), est.accuracy)
            if lab is not None:
                self.series.set(self.metrics.estimate_gap, (model, window), lab.gap)
        rules: list[tuple[Breach, int, dict[str, str]]] = []
        if est is not None and est.n >= s.estimate_min_predictions:
            floor = estimate_floor(s, model)
            if floor > 0:
                ceiling = 1.0 - floor
                rules.append(
                    (
                        Breach("estimated_error", est.risk, ceiling, severity(est.risk, ceiling)),
                        est.n,
                        {
                            "reason": f"estimated accuracy {est.accuracy:.4f} "
                            f"(±{est.band:.4f}) is below the floor {floor:g}",
                            "estimated_accuracy": repr(est.accuracy),
                        },
                    )
                )
            ref_sums = await self.state.reference_estimate(
                model, ConfidenceSums(est.n, est.accuracy * est.n, (est.sd * est.n) ** 2)
            )
            ref = estimate(ref_sums, s.estimate_band_z)
            if ref is not None:
                drop = drop_in_bands(est, ref)
                rules.append(
                    (
                        Breach("estimate_drop", drop, 1.0, severity(drop, 1.0)),
                        est.n,
                        {
                            "reason": f"estimated accuracy {est.accuracy:.4f} fell "
                            f"{ref.accuracy - est.accuracy:.4f} below the reference window's "
                            f"{ref.accuracy:.4f}, {drop:.2f} × the band of the difference",
                            "estimated_accuracy": repr(est.accuracy),
                            "reference_accuracy": repr(ref.accuracy),
                        },
                    )
                )
        if lab is not None and lab.estimate.n >= s.alert_min_labeled:
            off = lab.gap_in_bands
            rules.append(
                (
                    Breach("estimate_gap", off, 1.0, severity(off, 1.0)),
                    lab.estimate.n,
                    {
                        "reason": f"labels show accuracy {lab.realised:.4f} against the estimate "
                        f"{lab.estimate.accuracy:.4f} ± {lab.estimate.band:.4f}: the calibrator "
                        "is stale (recalibrate)",
                        "realised_accuracy": repr(lab.realised),
                        "estimated_accuracy": repr(lab.estimate.accuracy),
                        "band": repr(lab.estimate.band),
                    },
                )
            )
        out, changed = [], []
        for b, n, details in rules:
            t = await self.state.transition(model, b, now_ms, s.alert_cooldown_seconds)
            if t is None:
                continue
            changed.append(t)
            sev = b.severity if t.action == "raise" and b.severity else "resolved"
            out.append(
                alert_record(model, b, "performance", sev, window, n, t.since_ms, now_ms, details)
            )
        return out, changed

    def _snapshot(
        self,
        model: str,
        window: str,
        cal: Calibration,
        rc: RiskCoverageAnswer,
        labels_pending: int,
        now_ms: int,
    ) -> bytes:
        tenant, name, version = split_model_key(model)
        record = {
            "tenant": tenant,
            "model_name": name,
            "model_version": version,
            "window": window,
            "window_start_ms": now_ms - WINDOW_SECONDS[window] * 1000,
            "window_end_ms": now_ms,
            "computed_at_ms": now_ms,
            "n_predictions": cal.n_predictions,
            "n_labeled": cal.n_labeled,
            "n_review": cal.n_review,
            "labels_pending": labels_pending,
            "ece": cal.ece,
            "mce": cal.mce,
            "brier": cal.brier,
            "nll": cal.nll,
            "classwise_ece": cal.classwise_ece,
            "accuracy": cal.accuracy,
            "aurc": rc.aurc,
            "e_aurc": rc.e_aurc,
            "coverage": cal.coverage,
            "review_rate": cal.review_rate,
            "bins": [
                {
                    "lo": b.lo,
                    "hi": b.hi,
                    "confidence": b.confidence,
                    "accuracy": b.accuracy,
                    "count": b.count,
                }
                for b in cal.bins
            ],
        }
        return self.codec.encode("MetricSnapshot", record)

    def _export(self, model: str, window: str, cal: Calibration, rc: RiskCoverageAnswer) -> None:
        assert self.metrics is not None
        m = self.metrics
        for gauge, value in (
            (m.ece, cal.ece),
            (m.mce, cal.mce),
            (m.brier, cal.brier),
            (m.aurc, rc.aurc),
            (m.accuracy, cal.accuracy),
            (m.coverage, cal.coverage),
            (m.review_rate, cal.review_rate),
            (m.labeled, cal.n_labeled),
        ):
            if value is not None:
                self.series.set(gauge, (model, window), value)
        if window in ("1h", "24h"):
            for coverage in RISK_COVERAGES:
                risk = rc.risk_at_coverage(float(coverage))
                if risk is not None:
                    self.series.set(m.selective_risk, (model, window, coverage), risk)
            for i, b in enumerate(cal.bins):
                if b.accuracy is not None and b.confidence is not None:
                    self.series.set(m.reliability_accuracy, (model, window, str(i)), b.accuracy)
                    self.series.set(m.reliability_confidence, (model, window, str(i)), b.confidence)
