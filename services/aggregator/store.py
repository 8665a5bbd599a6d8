"""The aggregator's writes: one Lua call applies a batch's increments with its offsets."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from services.aggregator.counters import Increments
from shared.window_store import RETENTION_S, pending_slot_seconds, split_fine, unlabeled_key

# Everything of one consumed batch, atomically: if any partition's stored offset already
# covers the batch, nothing is applied (a replay after a crash).
_APPLY = """
local ops = cjson.decode(ARGV[1])
for tp, first in pairs(ops.first) do
  local done = redis.call('HGET', KEYS[1], tp)
  if done and tonumber(done) >= first then return 0 end
end
for _, b in ipairs(ops.incr) do
  for f, v in pairs(b[3]) do redis.call('HINCRBY', b[1], f, v) end
  redis.call('EXPIRE', b[1], b[2])
end
for _, s in ipairs(ops.set) do redis.call('SET', s[1], s[2], 'EX', s[3]) end
for _, k in ipairs(ops.del) do redis.call('DEL', k) end
for _, z in ipairs(ops.index) do
  redis.call('ZADD', z[1], z[2], z[2]); redis.call('EXPIRE', z[1], z[3])
end
for _, m in ipairs(ops.models) do redis.call('SADD', KEYS[2], m) end
for _, c in ipairs(ops.counts) do
  redis.call('HINCRBY', c[1], c[2], c[3]); redis.call('EXPIRE', c[1], ops.counts_ttl)
end
for _, key in ipairs(ops.count_keys) do
  for _, slot in ipairs(redis.call('HKEYS', key)) do
    if tonumber(slot) < ops.oldest_slot then redis.call('HDEL', key, slot) end
  end
end
for tp, last in pairs(ops.last) do redis.call('HSET', KEYS[1], tp, last) end
return 1
"""


class AggregatorStore:
    def __init__(self, client: aioredis.Redis, prefix: str, horizon_s: int) -> None:
        self.r = client
        self.p = f"{prefix}agg:"
        self.horizon = horizon_s
        self._apply = client.register_script(_APPLY)

    # Join records are per (tenant, event_id): event ids are unique within a tenant only, and
    # one tenant's label must never find another tenant's prediction.
    def pred_key(self, tenant: str, event_id: str) -> str:
        return f"{self.p}pred:{tenant}/{event_id}"

    def pending_key(self, tenant: str, event_id: str) -> str:
        return f"{self.p}pending:{tenant}/{event_id}"

    @property
    def slot_width(self) -> int:
        return pending_slot_seconds(self.horizon)

    def unlabeled_key(self, model: str) -> str:
        return unlabeled_key(self.p, model)

    async def offsets(self) -> dict[str, int]:
        raw = await self.r.hgetall(f"{self.p}offsets")
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def mget(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values = await self.r.mget(list(keys))
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    async def apply(
        self,
        increments: Increments,
        first: dict[str, int],
        last: dict[str, int],
        set_: list[tuple[str, str, int]],
        delete: list[str],
        counts: list[tuple[str, int, int]],
        now_s: int,
    ) -> bool:
        """Apply one part of a batch with its offsets; False when they already cover it.

        ``counts`` are (unlabeled key, arrival slot, delta); slots whose join records have
        all expired by ``now_s`` are dropped from the hashes they touch."""
        incr = []
        index = []
        models = set()
        for (granularity, model, start), fields in increments.items():
            main, fine = split_fine(fields)
            for suffix, part in (("", main), ("f", fine)):
                if part:
                    key = f"{self.p}{granularity}{suffix}:{model}:{start}"
                    incr.append([key, RETENTION_S[granularity], part])
            models.add(model)
            if granularity == "m":
                index.append([f"{self.p}idx:{model}", start, RETENTION_S["m"]])
        ops = {
            "first": first,
            "last": last,
            "incr": incr,
            "set": set_,
            "del": delete,
            "index": index,
            "models": sorted(models),
            "counts": [list(c) for c in counts],
            "counts_ttl": self.horizon + 2 * self.slot_width,
            "count_keys": sorted({c[0] for c in counts}),
            "oldest_slot": now_s - self.horizon - self.slot_width,
        }
        result = await self._apply(
            keys=[f"{self.p}offsets", f"{self.p}models"], args=[json.dumps(ops)]
        )
        return bool(result)
