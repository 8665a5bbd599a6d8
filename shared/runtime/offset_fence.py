"""Effectively-once effects in Redis for workers whose output is state, not messages.

A worker that consumes with ``Pipeline(transactional=False)`` commits its Kafka offsets
after its effect; a crash between the two replays the batch. The effect therefore carries
the offsets it covers: one Lua call checks, per topic:partition, that the stored last
applied offset is below the batch's first offset, applies every write and stores the
batch's last offsets, all atomically. A replayed batch finds its offsets covered and
changes nothing. Messages already covered are also dropped before any work
(:func:`fresh`), so a replay costs one ``HGETALL``.

The writes are a small, generic set (see :class:`Effect`); the writer's own key layout
stays in its store module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from confluent_kafka import Message

_APPLY = """
local ops = cjson.decode(ARGV[1])
for tp, first in pairs(ops.first) do
  local done = redis.call('HGET', KEYS[1], tp)
  if done and tonumber(done) >= first then return 0 end
end
for _, b in ipairs(ops.incr) do
  for f, v in pairs(b[3]) do redis.call('HINCRBY', b[1], f, v) end
  if b[2] > 0 then redis.call('EXPIRE', b[1], b[2]) end
end
for _, s in ipairs(ops.set) do
  if s[3] > 0 then redis.call('SET', s[1], s[2], 'EX', s[3]) else redis.call('SET', s[1], s[2]) end
end
for _, k in ipairs(ops.del) do redis.call('DEL', k) end
for _, z in ipairs(ops.zadd) do
  redis.call('ZADD', z[1], z[2], z[3])
  if z[4] > 0 then redis.call('EXPIRE', z[1], z[4]) end
end
for _, s in ipairs(ops.sadd) do redis.call('SADD', s[1], s[2]) end
for _, r in ipairs(ops.rpush) do redis.call('RPUSH', r[1], r[2]) end
for _, c in ipairs(ops.counts) do redis.call('INCRBY', c[1], c[2]) end
for _, e in ipairs(ops.expire) do redis.call('EXPIRE', e[1], e[2]) end
for _, m in ipairs(ops.hmax) do
  local cur = redis.call('HGET', m[1], m[2])
  if (not cur) or tonumber(cur) < m[3] then redis.call('HSET', m[1], m[2], m[3]) end
end
for _, b in ipairs(ops.hdel_below) do
  for _, f in ipairs(redis.call('HKEYS', b[1])) do
    if tonumber(f) < b[2] then redis.call('HDEL', b[1], f) end
  end
end
for _, d in ipairs(ops.decay) do
  local cur = redis.call('HMGET', d[1], 's', 'f', 't')
  local s = tonumber(cur[1]) or 0
  local f = tonumber(cur[2]) or 0
  local t = tonumber(cur[3]) or d[3]
  if d[3] >= t then
    local g = 2 ^ (-(d[3] - t) / d[2])
    s = s * g + d[4]
    f = f * g + d[5]
    t = d[3]
  else
    local g = 2 ^ (-(t - d[3]) / d[2])
    s = s + d[4] * g
    f = f + d[5] * g
  end
  redis.call('HSET', d[1], 's', string.format('%.17g', s), 'f', string.format('%.17g', f), 't', t)
end
for _, g in ipairs(ops.ring) do
  local ok = redis.call('SISMEMBER', g[1], g[3]) == 1
  if (not ok) and redis.call('SCARD', g[1]) < g[2] then
    redis.call('SADD', g[1], g[3])
    ok = true
  end
  local vals = g[6]
  if ok then
    for i = 1, #vals, 1000 do
      redis.call('RPUSH', g[4], unpack(vals, i, math.min(i + 999, #vals)))
    end
    redis.call('LTRIM', g[4], -g[5], -1)
    redis.call('HINCRBY', g[7], g[3], #vals)
    if g[9] > 0 then redis.call('EXPIRE', g[4], g[9]) end
  else
    redis.call('HINCRBY', g[7], g[8], #vals)
  end
  if g[9] > 0 then
    redis.call('EXPIRE', g[1], g[9])
    redis.call('EXPIRE', g[7], g[9])
  end
end
for tp, last in pairs(ops.last) do redis.call('HSET', KEYS[1], tp, last) end
return 1
"""


def topic_partition(message: Message) -> str:
    return f"{message.topic()}:{message.partition()}"


def fresh(messages: Sequence[Message], done: dict[str, int]) -> list[Message]:
    """The messages whose offset is beyond the last applied one of their partition."""
    return [m for m in messages if int(m.offset() or 0) > done.get(topic_partition(m), -1)]


@dataclass(slots=True)
class Effect:
    """Every write of one consumed batch; empty lists are fine. TTLs in seconds, 0 = none."""

    incr: list[tuple[str, int, dict[str, int]]] = field(default_factory=list)
    """(hash key, ttl, field → increment)"""
    set: list[tuple[str, str, int]] = field(default_factory=list)
    """(key, value, ttl)"""
    delete: list[str] = field(default_factory=list)
    zadd: list[tuple[str, float, str, int]] = field(default_factory=list)
    """(sorted-set key, score, member, ttl)"""
    sadd: list[tuple[str, str]] = field(default_factory=list)
    rpush: list[tuple[str, str]] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)
    """(key, INCRBY amount)"""
    hmax: list[tuple[str, str, int]] = field(default_factory=list)
    """(hash key, field, value): the field becomes max(stored, value)."""
    expire: list[tuple[str, int]] = field(default_factory=list)
    """(key, ttl): applied after the writes above, so it covers keys they created."""
    hdel_below: list[tuple[str, int]] = field(default_factory=list)
    """(hash key, n): the hash's fields (numbers) below n are deleted, after every write."""
    decay: list[tuple[str, float, int, float, float]] = field(default_factory=list)
    """(hash key, half-life ms, time ms, s add, f add): discounted sums ``s`` and ``f``
    stored at reference time ``t``; both halve every half-life. An addition at a time past
    ``t`` decays the stored sums to it first; an earlier one is decayed to ``t`` itself, so
    the result does not depend on the order of additions."""
    ring: list[tuple[str, int, str, str, int, list[int], str, str, int]] = field(
        default_factory=list
    )
    """(members set, cap, member, list key, keep, values, counts hash, overflow field, ttl):
    a capped ring of values per member. A member already in the set, or admitted while the
    set holds fewer than ``cap``, gets ``values`` appended to its list, trimmed to the last
    ``keep``, and its field of the counts hash raised by their number; a member refused by
    the cap raises the overflow field instead. Applied after every write above."""


class OffsetFence:
    """The applied offsets of one consumer (a hash ``offsets_key``) and the fenced write."""

    def __init__(self, client: aioredis.Redis, offsets_key: str) -> None:
        self._r = client
        self._key = offsets_key
        self._apply = client.register_script(_APPLY)

    async def done(self) -> dict[str, int]:
        raw = await self._r.hgetall(self._key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def apply(self, messages: Sequence[Message], effect: Effect) -> bool:
        """Apply ``effect`` for ``messages`` unless a partition's offsets already cover them
        (then nothing is written and False comes back)."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for m in messages:
            tp, off = topic_partition(m), int(m.offset() or 0)
            first[tp] = min(first.get(tp, off), off)
            last[tp] = max(last.get(tp, off), off)
        # Tuples encode as JSON arrays as they are: no copies of what can be thousands of writes.
        ops = {
            "first": first,
            "last": last,
            "incr": [i for i in effect.incr if i[2]],
            "set": effect.set,
            "del": effect.delete,
            "zadd": effect.zadd,
            "sadd": effect.sadd,
            "rpush": effect.rpush,
            "counts": effect.counts,
            "hmax": effect.hmax,
            "expire": effect.expire,
            "hdel_below": effect.hdel_below,
            "decay": effect.decay,
            "ring": effect.ring,
        }
        # cjson decodes an empty JSON array as an empty table, which ipairs/pairs accept.
        result = await self._apply(keys=[self._key], args=[json.dumps(ops)])
        return bool(result)
