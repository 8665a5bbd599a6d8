"""The drift worker's Redis state (layout in ``shared.windows.drift``): the fenced writes of
the batch loop, and what the evaluator reads and writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from shared.runtime import redis_client
from shared.runtime.offset_fence import OffsetFence
from shared.windows.drift import DriftKeys


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The window's buckets summed inside Redis and sent back as one "code count code count …"
# string: a client parses one bulk string instead of tens of thousands of hash fields.
_WINDOW_SUM = """
local sums = {}
local order = {}
for _, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local f = flat[i]
    local prev = sums[f]
    if prev == nil then order[#order + 1] = f; sums[f] = tonumber(flat[i + 1])
    else sums[f] = prev + tonumber(flat[i + 1]) end
  end
end
local out = {}
for i, f in ipairs(order) do out[i] = f .. ' ' .. string.format('%d', sums[f]) end
return table.concat(out, ' ')
"""


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values]


class DriftStore:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        self.keys = DriftKeys(prefix)
        self.fence = OffsetFence(client, self.keys.offsets)
        self._window_sum = client.register_script(_WINDOW_SUM)

    async def references(self, models: Sequence[str]) -> dict[str, bytes | str]:
        """Stored reference JSON of each of ``models`` that has one."""
        if not models:
            return {}
        values = await redis_client.mget(self.r, [self.keys.reference(m) for m in models])
        return {m: v for m, v in zip(models, values, strict=True) if v is not None}

    async def collected(self, models: Sequence[str]) -> dict[str, int]:
        if not models:
            return {}
        values = await redis_client.mget(self.r, [self.keys.collected(m) for m in models])
        return {m: int(v or 0) for m, v in zip(models, values, strict=True)}

    async def chunks(self, model: str) -> list[dict[str, Any]]:
        return [json.loads(c) for c in await self.r.lrange(self.keys.collect(model), 0, -1)]

    async def models(self) -> list[str]:
        return sorted(_text(m) for m in await self.r.smembers(self.keys.models))

    async def model_ids(self) -> dict[str, int]:
        raw = await self.r.hgetall(self.keys.model_ids)
        return {_text(k): int(v) for k, v in raw.items()}

    async def watermark_ms(self, model: str) -> int | None:
        value = await self.r.hget(self.keys.watermarks, model)
        return int(value) if value is not None else None

    async def window(
        self, model: str, version: str, lo_start: int, hi_start: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(field codes, summed counts) over the bucket hashes of ``model`` under profile
        ``version`` whose start is in [lo_start, hi_start]; buckets before ``lo_start`` are
        deleted (they left the window)."""
        index = self.keys.index(model, version)
        starts = _ints(await self.r.zrangebyscore(index, lo_start, hi_start))
        old = _ints(await self.r.zrangebyscore(index, "-inf", f"({lo_start}"))
        if old:
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(*[self.keys.bucket(model, version, s) for s in old])
            pipe.zremrangebyscore(index, "-inf", f"({lo_start}")
            await pipe.execute()
        if not starts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        flat = await self._window_sum(keys=[self.keys.bucket(model, version, s) for s in starts])
        pairs = np.array(_text(flat).split(), dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    async def set_reference(self, model: str, body: str) -> None:
        """Install a profile (an upload); a reference window still filling is dropped."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.reference(model), body)
        pipe.delete(self.keys.collect(model), self.keys.collected(model))
        await pipe.execute()

    async def save_scores(self, model: str, body: dict[str, Any]) -> None:
        await self.r.set(self.keys.scores(model), json.dumps(body, allow_nan=False))

    async def alert_states(self, model: str, features: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not features:
            return {}
        values = await self.r.mget([self.keys.alert(model, f) for f in features])
        return {f: json.loads(v) for f, v in zip(features, values, strict=True) if v is not None}

    async def save_alert_states(self, model: str, states: dict[str, dict[str, Any]]) -> None:
        if states:
            await redis_client.mset(
                self.r, {self.keys.alert(model, f): json.dumps(s) for f, s in states.items()}
            )
