"""Periodic evaluation: every score of every model version, Prometheus, alerts, uploads.

Each round (every ``drift_eval_seconds``) first installs newer uploaded profiles, then, for
every model version whose window moved since the last round (events counted by this
process, a new profile or new thresholds; every model version in the first round after
start), sums the bucket hashes of its sliding window — the buckets whose start lies
within ``drift_window_seconds`` of the bucket holding its latest event time — scores every
part against the active profile, stores the scores for the gateway, exports them and sends
alert transitions to ``<ns>.alerts``. A replica evaluates only the model versions it owns;
the new alert state and the alerts are saved in one fenced write (an outbox, see
:mod:`shared.runtime.ownership`), then produced and acknowledged, then taken out of the
outbox, so a crash in between re-sends (the recorder dedupes by alert id) rather than
loses one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import asyncpg
import numpy as np
from confluent_kafka import Producer

from services.drift.alerts import alert_record, primary_method, transition
from services.drift.binning import decode_fields, parts
from services.drift.metrics import MAX_EXPORTED, DriftMetrics
from services.drift.processing import ActiveProfile, ProfileCache
from services.drift.reference import reference_json
from services.drift.settings import DriftSettings
from services.drift.store import DriftStore
from services.drift.uploads import UploadSource
from shared.alerts.publish import publish_alerts
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.drift.profile import CategoricalProfile
from shared.drift.profile_codec import profile_from_dict
from shared.drift.scores import DriftMethod, DriftScore, profile_drift
from shared.runtime.observability import RoundSeries
from shared.runtime.ownership import OwnerFence, Ownership
from shared.runtime.rounds import run_rounds
from shared.windows.names import window_name

logger = logging.getLogger(__name__)


class Evaluator:
    def __init__(
        self,
        settings: DriftSettings,
        store: DriftStore,
        cache: ProfileCache,
        uploads: UploadSource | None,
        producer: Producer,
        codec: AvroCodec,
        metrics: DriftMetrics | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.ownership = ownership or Ownership.sole(
            OwnerFence(store.r, f"{settings.redis_prefix}drift:")
        )
        """The model versions this replica evaluates, and the fence of its writes."""
        self.store = store
        self.cache = cache
        self.uploads = uploads
        self.producer = producer
        self.codec = codec
        self.metrics = metrics
        self.topics = Topics.for_namespace(settings.topic_namespace)
        self.thresholds: dict[tuple[str, str], float] = {}
        self._series = RoundSeries()
        self._unusable: set[int] = set()
        self._started = False
        """False until the first full round: a window ends at its model version's latest
        event, so afterwards only versions with new events (or a new profile or thresholds)
        can have other scores, and each replica scores those of its own partitions."""

    async def run(self, stopping: asyncio.Event) -> None:
        await run_rounds(
            "drift evaluation", self.evaluate, self.settings.drift_eval_seconds, stopping, logger,
            wake=self.ownership.wake,
        )  # fmt: skip

    def threshold(self, model: str, score: DriftScore) -> float:
        own = self.thresholds.get((model, score.feature))
        if own is not None:
            return own
        if score.method is DriftMethod.CHI_SQUARED:
            return self.settings.drift_chi_threshold
        return self.settings.drift_psi_threshold

    async def sync_uploads(self) -> None:
        """Install every upload newer than the active profile; refresh the thresholds."""
        if self.uploads is None:
            return
        try:
            latest = await self.uploads.latest()
            thresholds = await self.uploads.thresholds()
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning("uploaded drift references not read: %s", exc)
            return
        changed = set(thresholds.items()) ^ set(self.thresholds.items())
        self.cache.dirty.update(model for (model, _), _ in changed)
        self.thresholds = thresholds
        if not latest:
            return
        stored = await self.store.references(list(latest))
        for model, up in latest.items():
            active = self.cache.get(model)
            if model in stored and (active is None or active.upload_id != up.id):
                active = self.cache.load(model, stored[model])
            if (active is not None and active.upload_id == up.id) or up.id in self._unusable:
                continue
            try:
                profile = profile_from_dict(await self.uploads.profile(up.id))
            except ValueError as exc:
                logger.error("%s: uploaded reference %d is not usable: %s", model, up.id, exc)
                self._unusable.add(up.id)
                continue
            await self.store.set_reference(model, reference_json(profile, "upload", up.id))
            self.cache.active[model] = ActiveProfile(profile, "upload", up.id)
            self.cache.dirty.add(model)
            if self.metrics is not None:
                self.metrics.profiles.labels("upload").inc()
            logger.info("%s: uploaded reference profile %s active", model, profile.version)

    async def evaluate(self, now_ms: int) -> list[dict[str, Any]]:
        """One round over the owned model versions whose window moved (all of them after
        start or a new assignment); returns the alerts it raised or resolved."""
        await self.sync_uploads()
        fresh = self.ownership.take_wake() or not self._started
        ids = await self.store.model_ids()
        alerts: list[dict[str, Any]] = []
        sent: dict[str, list[str]] = {}
        models = await self.store.models()
        async with self.ownership.round():
            todo = {
                m for m in models if self.ownership.owns(m) and (fresh or m in self.cache.dirty)
            }
            self.cache.dirty -= todo
            try:
                for rank, model in enumerate(models):
                    if model in todo:
                        await self._one(model, rank, ids.get(model), now_ms, alerts, sent)
                await self._send([])
            except BaseException:
                self.cache.dirty |= todo  # scored (and its outbox sent) again next round
                raise
            for model, done in sent.items():
                await self.ownership.fence.delivered(model, done)
        self._started = True
        return alerts

    async def _one(
        self,
        model: str,
        rank: int,
        model_version_id: int | None,
        now_ms: int,
        alerts: list[dict[str, Any]],
        sent: dict[str, list[str]],
    ) -> None:
        started = time.perf_counter()
        token = await self.ownership.token(model)  # claimed before any state is read
        if token is None:
            return
        result = await self.evaluate_model(model, model_version_id, now_ms)
        if result is None:
            return
        scores, raised, changed = result
        outbox = await self.ownership.fence.save(
            model,
            token,
            {self.store.keys.alert(model, f): json.dumps(st) for f, st in changed.items()},
            {a["alert_id"]: self.codec.encode("Alert", a) for a in raised},
        )
        if outbox is None:
            self.ownership.refused(model)
            return
        for value in outbox.values():
            self.producer.produce(self.topics.alerts, value, model.encode())
        alerts += raised
        sent[model] = list(outbox)
        if self.metrics is not None:
            self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
            if rank < MAX_EXPORTED:
                self._export(model, scores)
            elif self._series.exported(model):
                self._export(model, [])  # pushed out of the exported ones: drop its series

    async def _send(self, alerts: list[dict[str, Any]]) -> None:
        await publish_alerts(self.producer, self.topics.alerts, self.codec, alerts)

    async def scores(self, model: str) -> tuple[ActiveProfile, list[DriftScore], int] | None:
        """(active profile, every score of the window, window end ms), or None while the
        model version's reference window is still filling."""
        active = self.cache.get(model)
        if active is None:
            raw = (await self.store.references([model])).get(model)
            if raw is None:
                return None
            active = self.cache.load(model, raw)
        profile = active.profile
        wm = await self.store.watermark_ms(model)
        if wm is None:
            return None
        b, w = self.settings.drift_bucket_seconds, self.settings.drift_window_seconds
        hi = (wm // 1000) // b * b
        lo = hi - (math.ceil(w / b) - 1) * b
        codes, values = await self.store.window(model, profile.version, lo, hi)
        all_parts = parts(profile)
        counts = decode_fields(codes, values, {p.index: p.profile.n_cells for p in all_parts})
        keyed = {
            p.name: counts.get(p.index, np.zeros(p.profile.n_cells, dtype=np.int64))
            for p in all_parts
        }
        scores = profile_drift(profile, keyed, min_samples=self.settings.drift_min_samples)
        return active, scores, wm

    async def evaluate_model(
        self, model: str, model_version_id: int | None, now_ms: int
    ) -> tuple[list[DriftScore], list[dict[str, Any]], dict[str, dict[str, Any]]] | None:
        result = await self.scores(model)
        if result is None:
            return None
        active, scores, wm = result
        primary = [s for s in scores if primary_method(s)]
        states = await self.store.alert_states(model, [s.feature for s in primary])
        window = window_name(self.settings.drift_window_seconds)
        sent: list[dict[str, Any]] = []
        changed: dict[str, dict[str, Any]] = {}
        for s in primary:
            threshold = self.threshold(model, s)
            new, change = transition(
                states.get(s.feature),
                s,
                threshold,
                wm,
                self.settings.drift_cooldown_seconds,
                self.settings.drift_chi_max_p_value,
            )
            if change is None:
                if new != states.get(s.feature):
                    changed[s.feature] = new
                continue
            changed[s.feature] = new
            details = {"window_end_ms": str(wm), "reference_source": active.source}
            if s.p_value is not None:
                details["p_value"] = repr(s.p_value)
            sent.append(
                alert_record(model, model_version_id, s, threshold, change, window, now_ms, details)
            )
            if self.metrics is not None:
                self.metrics.alerts.labels(str(s.method), change.severity).inc()
        await self.store.save_scores(
            model,
            self._scores_body(model, model_version_id, active, scores, wm, now_ms, states, changed),
        )
        return scores, sent, changed

    def _scores_body(
        self,
        model: str,
        model_version_id: int | None,
        active: ActiveProfile,
        scores: list[DriftScore],
        wm: int,
        now_ms: int,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        profile = active.profile
        kinds = {p.name: p.profile for p in parts(profile)}
        features: dict[str, dict[str, Any]] = {}
        for s in scores:
            f = features.setdefault(
                s.feature,
                {
                    "feature": s.feature,
                    "kind": "categorical"
                    if isinstance(kinds.get(s.feature), CategoricalProfile)
                    else "numeric",
                    "n_samples": s.n_samples,
                    "trusted": s.trusted,
                    "scores": {},
                },
            )
            f["scores"][str(s.method)] = s.score if math.isfinite(s.score) else None
            if s.p_value is not None:
                f["p_value"] = s.p_value
            if primary_method(s):
                threshold = self.threshold(model, s)
                state = after.get(s.feature) or before.get(s.feature) or {}
                f.update(
                    method=str(s.method),
                    drift_score=s.score,
                    threshold=threshold,
                    severity=None
                    if s.p_value is not None and s.p_value > self.settings.drift_chi_max_p_value
                    else s.severity(threshold),
                    alerting=bool(state.get("active")),
                )
        return {
            "model": model,
            "model_version_id": model_version_id,
            "reference_version": profile.version,
            "reference_source": active.source,
            "reference_samples": profile.n_samples,
            "window": window_name(self.settings.drift_window_seconds),
            "window_end_ms": wm,
            "evaluated_at_ms": now_ms,
            "min_samples": self.settings.drift_min_samples,
            "features": list(features.values()),
        }

    def _export(self, model: str, scores: list[DriftScore]) -> None:
        assert self.metrics is not None
        m = self.metrics
        self._series.begin(model)
        for s in scores:
            self._series.set(m.score, (model, s.feature, str(s.method)), s.score, model)
            self._series.set(m.samples, (model, s.feature), s.n_samples, model)
        self._series.end(model)
