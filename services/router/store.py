"""The router's writes: one fenced Redis effect per consumed batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from shared.routing.state import (
    DAY_MS,
    DAYS_KEPT,
    HOUR_MS,
    HOURS_KEPT,
    MICRO,
    SEP,
    DecisionRecord,
    RouteKeys,
)
from shared.runtime import redis_client
from shared.runtime.offset_fence import Effect, OffsetFence


def _text(x: float | None) -> str:
    return "" if x is None else repr(x)


@dataclass(slots=True)
class Counted:
    """One outcome to count: its decision and its score."""

    decision: DecisionRecord
    score: float


@dataclass(slots=True)
class EffectBuilder:
    """Collects one batch's writes; outcomes of one path are folded into one decayed add."""

    keys: RouteKeys
    half_life_ms: float
    decision_ttl: int
    effect: Effect = field(default_factory=Effect)
    _decay: dict[str, list[float]] = field(default_factory=dict)
    _incr: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    _latest_ms: int = 0
    _hour_keys: set[str] = field(default_factory=set)
    _day_keys: set[str] = field(default_factory=set)

    def _add(self, key: str, name: str, amount: int) -> None:
        fields = self._incr[key]
        fields[name] = fields.get(name, 0) + amount

    def decision(
        self, decision_id: str, record: DecisionRecord, cost: float | None, latency: float | None
    ) -> None:
        k = self.keys
        if cost is not None or latency is not None:
            value = f"{_text(cost)}{SEP}{_text(latency)}"
            self.effect.set.append((k.cost(record.tenant, record.goal, record.path), value, 0))
        self.effect.set.append((k.decision(decision_id), record.encode(), self.decision_ttl))
        self._add(k.post(record.tenant, record.goal, record.path), "d", 1)
        self.effect.sadd.append((k.goal(record.tenant, record.goal), record.path))
        self.effect.sadd.append((k.goals(record.tenant), record.goal))

    def outcome(self, decision_id: str, counted: Counted) -> None:
        k, d, score = self.keys, counted.decision, counted.score
        self.effect.set.append((k.outcome(decision_id), "1", self.decision_ttl))
        post = k.post(d.tenant, d.goal, d.path)
        micro = round(score * MICRO)
        if d.forced:
            self._add(post, "fn", 1)
            self._add(post, "fs", micro)
            return
        self._add(post, "n", 1)
        acc = self._decay.setdefault(post, [float(d.decided_ms), 0.0, 0.0])
        # Fold into the running (time, s, f): decay whichever side is older to the newer.
        t = float(d.decided_ms)
        if t >= acc[0]:
            g = 2.0 ** (-(t - acc[0]) / self.half_life_ms)
            acc[:] = [t, acc[1] * g + score, acc[2] * g + (1.0 - score)]
        else:
            g = 2.0 ** (-(acc[0] - t) / self.half_life_ms)
            acc[1] += score * g
            acc[2] += (1.0 - score) * g
        hour, day = d.decided_ms // HOUR_MS, d.decided_ms // DAY_MS
        hours, days = k.hours(d.tenant, d.goal, d.path), k.days(d.tenant, d.goal, d.path)
        self._add(hours, str(hour * 10), micro)
        self._add(hours, str(hour * 10 + 1), 1)
        self._add(days, str(day * 10), micro)
        self._add(days, str(day * 10 + 1), 1)
        self._hour_keys.add(hours)
        self._day_keys.add(days)
        self._latest_ms = max(self._latest_ms, d.decided_ms)

    def pending(self, decision_id: str, score: float, source: str, ttl: int) -> None:
        self.effect.set.append((self.keys.pending(decision_id), f"{score!r}\x1f{source}", ttl))

    def build(self) -> Effect:
        e = self.effect
        for key, fields in self._incr.items():
            e.incr.append((key, 0, fields))
        for key, (t, s, f) in self._decay.items():
            e.decay.append((key, self.half_life_ms, int(t), s, f))
        if self._latest_ms:
            hour_floor = (self._latest_ms // HOUR_MS - HOURS_KEPT) * 10
            day_floor = (self._latest_ms // DAY_MS - DAYS_KEPT) * 10
            e.hdel_below.extend((key, hour_floor) for key in self._hour_keys)
            e.hdel_below.extend((key, day_floor) for key in self._day_keys)
        return e


class RouterStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = RouteKeys(prefix)
        self.fence = OffsetFence(client, self.keys.offsets)

    async def joins(
        self, label_events: list[tuple[str, str]], new_links: list[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str], set[str]]:
        """The stored links of ``label_events``, the waiting labels of ``new_links`` (routed
        predictions of this batch) and the routed models: three concurrent reads."""
        k, r = self.keys, self.client
        stored, waiting_raw, members = await asyncio.gather(
            redis_client.mget(r, [k.event(*ev) for ev in label_events]),
            redis_client.mget(r, [k.waiting_label(*ev) for ev in new_links]),
            r.smembers(k.routed_models),
        )
        links = {ev: v.decode() for ev, v in zip(label_events, stored, strict=False) if v}
        waiting = {ev: v.decode() for ev, v in zip(new_links, waiting_raw, strict=False) if v}
        return links, waiting, {m.decode() for m in members}

    async def lookup(
        self, decision_ids: list[str], pending_for: list[str]
    ) -> tuple[dict[str, DecisionRecord], set[str], dict[str, str]]:
        """The decision records and counted-outcome markers of ``decision_ids`` and the
        pending outcomes of ``pending_for``: three concurrent MGETs (split per slot on a
        cluster)."""
        k, r = self.keys, self.client
        recs, outs, pend = await asyncio.gather(
            redis_client.mget(r, [k.decision(d) for d in decision_ids]),
            redis_client.mget(r, [k.outcome(d) for d in decision_ids]),
            redis_client.mget(r, [k.pending(d) for d in pending_for]),
        )
        records = {
            d: DecisionRecord.decode(raw)
            for d, raw in zip(decision_ids, recs, strict=False)
            if raw is not None
        }
        counted = {d for d, done in zip(decision_ids, outs, strict=False) if done is not None}
        pending = {d: v.decode() for d, v in zip(pending_for, pend, strict=False) if v}
        return records, counted, pending
