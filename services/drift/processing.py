"""The drift step: count each model version's events into its current-window histograms.

A model version without a reference profile first fills its reference window (its first
``reference_events`` events, see :mod:`services.drift.reference`); the batch that completes
it builds the profile, and its remaining events, like every later one, are counted per
event-time bucket against that profile. Everything a batch changes goes to Redis in one
offset-fenced call (``shared.runtime.offset_fence``), so a replay after a crash counts
nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Message

from services.drift.binning import bucketed_counts, encode_fields
from services.drift.metrics import DriftMetrics
from services.drift.reference import build_from_chunks, chunk, parse_reference, reference_json
from services.drift.store import DriftStore
from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec, Decoded
from shared.contracts.dead_letters import dead_letter
from shared.contracts.topics import Topics
from shared.drift.profile import ReferenceProfile
from shared.runtime import clock
from shared.runtime.offset_fence import Effect
from shared.runtime.pipeline import Output

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ActiveProfile:
    profile: ReferenceProfile
    source: str
    upload_id: int = 0


@dataclass(slots=True)
class ProfileCache:
    """Active profile per model version, shared by the batch loop and the evaluator of one
    process (Redis ``Pref:M`` is the durable copy)."""

    active: dict[str, ActiveProfile] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    """Model versions whose window changed since the evaluator last scored them."""

    def get(self, model: str) -> ActiveProfile | None:
        return self.active.get(model)

    def load(self, model: str, raw: str | bytes) -> ActiveProfile:
        profile, source, upload_id = parse_reference(raw)
        self.active[model] = entry = ActiveProfile(profile, source, upload_id)
        return entry


@dataclass(frozen=True, slots=True)
class WindowConfig:
    bucket_seconds: int
    window_seconds: int
    reference_events: int
    reference_ttl: int = 7 * 24 * 3600
    """How long a model version's half-collected reference window waits for more events."""

    @property
    def ttl(self) -> int:
        return 2 * self.window_seconds + self.bucket_seconds


class DriftProcessor:
    def __init__(
        self,
        topics: Topics,
        codec: AvroCodec,
        store: DriftStore,
        cache: ProfileCache,
        config: WindowConfig,
        metrics: DriftMetrics | None = None,
    ) -> None:
        self._topics = topics
        self._codec = codec
        self._store = store
        self._cache = cache
        self._config = config
        self._metrics = metrics
        self.events_scored = 0
        self.events_reference = 0

    async def __call__(self, messages: Sequence[Message]) -> list[Output]:
        units = await self._store.fence.units(messages)
        dead, by_unit = self._decode(messages, units)
        for unit, by_model in zip(units, by_unit, strict=True):
            await self._unit(unit, by_model)
        return dead

    async def _unit(
        self, todo: list[Message], by_model: dict[str, list[PredictionColumns]]
    ) -> None:
        """Score or collect one unit of fresh messages and apply its effect."""
        store = self._store
        models = list(by_model)
        unknown = [k for k in models if self._cache.get(k) is None]
        for k, raw in (await store.references(unknown)).items():
            self._cache.load(k, raw)
        filling = [k for k in models if self._cache.get(k) is None]
        collected = await store.collected(filling)
        effect = Effect()
        built: dict[str, ActiveProfile] = {}
        scored = reference = 0
        for model, batches in by_model.items():
            self._model_state(model, batches, effect)
            active = self._cache.get(model)
            if active is None:
                batches, taken, done = await self._collect(model, batches, collected[model], effect)
                reference += taken
                if done is not None:
                    active = built[model] = done
            if active is not None and batches:
                scored += sum(len(b) for b in batches)
                self._count(model, active.profile, batches, effect)
        if await store.fence.apply(todo, effect):
            self._applied(by_model, built, scored, reference)

    def _decode(
        self, messages: Sequence[Message], units: list[list[Message]]
    ) -> tuple[list[Output], list[dict[str, list[PredictionColumns]]]]:
        """(dead letters, each unit's batches by model version key).

        Every message is decoded, not only the fresh ones: a replay after a crash then sends
        an undecodable message's dead letter again rather than never."""
        now_ms = clock.now_ms()
        dead: list[Output] = []
        unit_of = {id(m): i for i, u in enumerate(units) for m in u}
        by_unit: list[dict[str, list[PredictionColumns]]] = [{} for _ in units]
        for m in messages:
            decoded = self._codec.decode(m.value(), {"PredictionBatch"}, columnar=True)
            if not isinstance(decoded, Decoded):
                dead.append(
                    dead_letter(
                        self._topics.deadletter,
                        self._codec,
                        m,
                        str(decoded.code),
                        decoded.message,
                        "drift",
                        now_ms,
                    )
                )
                continue
            i = unit_of.get(id(m))
            if i is None:
                continue
            cols = PredictionColumns.from_record(decoded.record)
            if len(cols):
                by_unit[i].setdefault(cols.key, []).append(cols)
        return dead, by_unit

    def _applied(
        self,
        by_model: dict[str, list[PredictionColumns]],
        built: dict[str, ActiveProfile],
        scored: int,
        reference: int,
    ) -> None:
        """Bookkeeping once a batch's effect is in Redis: the profile cache, counts, logs."""
        self._cache.active.update(built)
        self._cache.dirty.update(by_model)
        self.events_scored += scored
        self.events_reference += reference
        if self._metrics is not None:
            self._metrics.events.labels("scored").inc(scored)
            self._metrics.events.labels("reference").inc(reference)
            for a in built.values():
                self._metrics.profiles.labels(a.source).inc()
        for model, a in built.items():
            logger.info("%s: reference profile %s built", model, a.profile.version)

    def _model_state(self, model: str, batches: list[PredictionColumns], effect: Effect) -> None:
        keys = self._store.keys
        effect.sadd.append((keys.models, model))
        latest = max(int(b.event_time_ms.max()) for b in batches)
        effect.hmax.append((keys.watermarks, model, latest))
        ids = [b.model_version_id for b in batches if b.model_version_id is not None]
        if ids:
            effect.hmax.append((keys.model_ids, model, int(ids[-1])))

    async def _collect(
        self, model: str, batches: list[PredictionColumns], have: int, effect: Effect
    ) -> tuple[list[PredictionColumns], int, ActiveProfile | None]:
        """(events left to score, events taken for the reference, the profile when this
        batch completes the reference window)."""
        keys = self._store.keys
        need = self._config.reference_events - have
        chunks = []
        rest: list[PredictionColumns] = []
        taken = 0
        for cols in batches:
            take = max(0, min(need - taken, len(cols)))
            if take:
                chunks.append(chunk(cols, slice(0, take)))
                taken += take
            if take < len(cols):
                rest.append(cols.take(np.arange(take, len(cols))))
        if have + taken < self._config.reference_events:
            effect.rpush += [(keys.collect(model), json.dumps(c)) for c in chunks]
            effect.counts.append((keys.collected(model), taken))
            # A version that never reaches its reference count must not keep them forever.
            ttl = self._config.reference_ttl
            effect.expire += [(keys.collect(model), ttl), (keys.collected(model), ttl)]
            return rest, taken, None
        profile = build_from_chunks(model, [*await self._store.chunks(model), *chunks])
        effect.set.append((keys.reference(model), reference_json(profile, "window"), 0))
        effect.delete += [keys.collect(model), keys.collected(model)]
        return rest, taken, ActiveProfile(profile, "window")

    def _count(
        self,
        model: str,
        profile: ReferenceProfile,
        batches: list[PredictionColumns],
        effect: Effect,
    ) -> None:
        keys = self._store.keys
        ttl = self._config.ttl
        for start, parts_counts in bucketed_counts(
            profile, batches, self._config.bucket_seconds
        ).items():
            effect.incr.append(
                (keys.bucket(model, profile.version, start), ttl, encode_fields(parts_counts))
            )
            effect.zadd.append((keys.index(model, profile.version), start, str(start), ttl))
