"""The aggregator's writes: each part of a batch applied in one fenced Lua call with its
offsets (:mod:`shared.runtime.offset_fence`), in the key layout of
:mod:`shared.windows.calibration`."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from confluent_kafka import Message

from services.aggregator.counters import Increments
from shared.runtime import redis_client
from shared.runtime.offset_fence import Effect, OffsetFence
from shared.windows.calibration import (
    RETENTION_S,
    bucket_key,
    index_key,
    join_key,
    pending_slot_seconds,
    split_calibrated,
    split_fine,
    unlabeled_key,
)
from shared.windows.rollout import ROLLOUT_TTL_S, rollout_key
from shared.windows.segments import OVERFLOW, SEGMENT_TTL_SECONDS, SegmentLayout


class AggregatorStore:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        horizon_s: int,
        segment_window: int = 500,
        segment_cap: int = 1_000,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.p = f"{prefix}agg:"
        self.horizon = horizon_s
        self.segments = SegmentLayout(prefix)
        self.segment_window = segment_window
        """Labeled events each segment keeps (W)."""
        self.segment_cap = segment_cap
        self.fence = OffsetFence(client, f"{self.p}offsets")

    # Join records are per (tenant, event_id): event ids are unique within a tenant only, and
    # one tenant's label must never find another tenant's prediction.
    def pred_key(self, tenant: str, event_id: str) -> str:
        return join_key(self.p, "pred", tenant, event_id)

    def pending_key(self, tenant: str, event_id: str) -> str:
        return join_key(self.p, "pending", tenant, event_id)

    @property
    def slot_width(self) -> int:
        return pending_slot_seconds(self.horizon)

    def rollout_key(self, model: str, candidate: str) -> str:
        return rollout_key(self.prefix, model, candidate)

    def unlabeled_key(self, model: str) -> str:
        return unlabeled_key(self.p, model)

    async def mget(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values = await redis_client.mget(self.r, keys)
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    async def apply(
        self,
        messages: Sequence[Message],
        increments: Increments,
        set_: list[tuple[str, str, int]],
        delete: list[str],
        unlabeled: dict[tuple[str, int], int],
        now_s: int,
        segment_windows: dict[tuple[str, str], list[int]] | None = None,
        rollout: dict[tuple[str, str], dict[str, int]] | None = None,
    ) -> bool:
        """Apply one part of a batch for ``messages``; False when their offsets already
        cover it (nothing is written).

        ``unlabeled`` maps (model key, arrival slot) to the change of its unlabeled count;
        slots whose join records have all expired by ``now_s`` are dropped.
        ``segment_windows`` maps (model key, segment) to its newly labeled events (encoded
        pairs), appended to the segment's capped window (:mod:`shared.windows.segments`)."""
        effect = Effect(set=set_, delete=delete)
        models = set()
        for (granularity, model, start), fields in increments.items():
            rest, calibrated = split_calibrated(fields)
            main, fine = split_fine(rest)
            for suffix, part in (("", main), ("f", fine), ("q", calibrated)):
                if part:
                    key = bucket_key(self.p, granularity, model, start, suffix)
                    effect.incr.append((key, RETENTION_S[granularity], part))
            models.add(model)
            if granularity == "m":
                effect.zadd.append((index_key(self.p, model), start, str(start), RETENTION_S["m"]))
        effect.sadd = [(f"{self.p}models", m) for m in sorted(models)]
        slots: dict[str, dict[str, int]] = {}
        for (model, slot), delta in unlabeled.items():
            if delta:
                slots.setdefault(self.unlabeled_key(model), {})[str(slot)] = delta
        oldest = now_s - self.horizon - self.slot_width
        for key, deltas in slots.items():
            effect.incr.append((key, self.horizon + 2 * self.slot_width, deltas))
            effect.hdel_below.append((key, oldest))
        self._segment_writes(effect, segment_windows or {})
        for (model, candidate), fields in (rollout or {}).items():
            if fields:
                effect.incr.append((self.rollout_key(model, candidate), ROLLOUT_TTL_S, fields))
        return await self.fence.apply(messages, effect)

    def _segment_writes(self, effect: Effect, windows: dict[tuple[str, str], list[int]]) -> None:
        lay = self.segments
        for (model, segment), values in windows.items():
            effect.ring.append(
                (
                    lay.members(model, segment.partition("=")[0]),
                    self.segment_cap,
                    segment,
                    lay.ring(model, segment),
                    self.segment_window,
                    values,
                    lay.counts(model),
                    OVERFLOW,
                    SEGMENT_TTL_SECONDS,
                )
            )
            effect.sadd.append((lay.models, model))
