"""Effectively-once effects in Redis for workers whose output is state, not messages.

A worker that consumes with ``Pipeline(transactional=False)`` commits its Kafka offsets
after its effect; a crash between the two replays the batch. The effect therefore carries
the offsets it covers, and is applied per hash tag so it runs unchanged on Redis Cluster:

- **Parts.** :meth:`OffsetFence.apply` splits an :class:`Effect` by the hash tag of its
  keys (``{tenant/model/version}``, a route, a shard ``{~…}``; the layouts live in
  ``shared.windows.*``). Each part is one Lua call in one slot, with its own fence hash
  ``<offsets key>:{tag}`` (last applied offset per topic:partition, expiring after
  ``PART_FENCE_TTL_S``): the call refuses the part when that fence already covers the
  batch's first offset, else applies every write and stores the batch's last offsets. Every
  key it touches is passed in KEYS. Parts of model-version (and route) tags go first, shard
  parts (tags starting with ``~``: per-event join records whose reads decide the other
  parts' writes) last, so a replay re-reads the same records for every part not yet applied.
- **Global keys** (no hash tag: the sets of model versions, watermark hashes) take only
  idempotent, order-free writes (``SADD``, ``hmax``, ``EXPIRE``); they are written after
  the parts, outside the fence, which is harmless on replay. After, not before: a reader
  that follows a watermark (or a set of model versions) to the windows finds the data it
  announces (written before, an evaluation between the two read a window ending at the
  new watermark with none of its counts).
- **Intent and commit.** Before the parts the batch's last offsets go into the hash
  ``<offsets key>:inflight`` (a maximum per topic:partition), after them into
  ``<offsets key>`` (the applied offsets, also a maximum). A message is covered only when
  every tag it wrote is, i.e. when its offset is at most ``<offsets key>``; messages past it
  are replayed. A crash between parts leaves each part's fence either at or below the
  applied offsets or at the in-flight ones, never in between: :meth:`OffsetFence.units`
  therefore replays the messages up to the in-flight offsets as a unit of their own (a part
  already applied refuses it whole, a part not applied takes it whole) before the rest.

A batch reads the two hashes (one pipelined round trip) and writes two round trips more
than its parts (plus one for global keys, when it has them). The writes
are a small, generic set (see :class:`Effect`); the writer's own key layout stays in its
store module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from confluent_kafka import Message

from shared.runtime.redis_client import Script, hash_tag, tagged

PART_FENCE_TTL_S = 7 * 86_400
"""How long a part's fence outlives its last write: it only matters until the applied
offsets pass it, i.e. until the batch is replayed after a crash."""
SHARD_MARK = "~"
"""First character of a shard tag (``shared.runtime.redis_client.shard_tag``)."""

_APPLY = """
local ops = cjson.decode(ARGV[1])
for tp, first in pairs(ops.first) do
  local done = redis.call('HGET', KEYS[1], tp)
  if done and tonumber(done) >= first then return 0 end
end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local key, ttl, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  for _ = 1, n do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
for _ = 1, tonumber(ARGV[i]) do
  local ttl = tonumber(ARGV[i + 3])
  if ttl > 0 then
    redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'EX', ttl)
  else
    redis.call('SET', ARGV[i + 1], ARGV[i + 2])
  end
  i = i + 3
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
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The maximum of each field: the intent and the applied offsets.
_MAX = """
local vals = cjson.decode(ARGV[1])
for f, v in pairs(vals) do
  local cur = redis.call('HGET', KEYS[1], f)
  if (not cur) or tonumber(cur) < v then redis.call('HSET', KEYS[1], f, v) end
end
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


_OPS = (
    "incr",
    "set",
    "delete",
    "zadd",
    "sadd",
    "rpush",
    "counts",
    "hmax",
    "expire",
    "hdel_below",
    "decay",
    "ring",
)
"""Effect fields, in the order the Lua call applies them."""
_LUA_NAME = {"delete": "del"}
_BULK = ("incr", "set")
"""Effect fields passed to the Lua call as flat arguments (:func:`_bulk`), not JSON."""
_GLOBAL_OPS = frozenset({"sadd", "hmax", "expire"})
"""Writes allowed on keys without a hash tag: idempotent and independent of their order, so
they may go before the fence and again on a replay."""
_RING_KEYS = (0, 3, 6)


def _keys_of(op: str, item: Any) -> list[str]:
    if op == "delete":
        return [item]
    if op == "ring":
        return [item[i] for i in _RING_KEYS]
    return [item[0]]


def _first_keys(op: str, items: list[Any]) -> list[str]:
    """The key of each write of ``op`` (the first, for a ring)."""
    return list(items) if op == "delete" else [item[0] for item in items]


def split_effect(effect: Effect) -> dict[str | None, Effect]:
    """``effect`` by hash tag (None: keys without one). Raises ValueError for a write whose
    keys do not share one tag, or for a write on a key without a tag that is not idempotent.
    Writes keep their order within each part. (Thousands of writes per batch: one tag and
    one append per write, nothing more.)"""
    parts: dict[str | None, Effect] = {}
    for op in _OPS:
        items = getattr(effect, op)
        if not items:
            continue
        by_tag: dict[str | None, list[Any]] = {}
        for item, key in zip(items, _first_keys(op, items), strict=True):
            tag = hash_tag(key)
            if op == "ring" and any(hash_tag(item[i]) != tag for i in _RING_KEYS):
                raise ValueError(f"{op} on keys of different hash tags: {item!r}")
            group = by_tag.get(tag)
            if group is None:
                if tag is None and op not in _GLOBAL_OPS:
                    raise ValueError(f"{op} on {key!r}, a key without a hash tag")
                group = by_tag[tag] = []
            group.append(item)
        for tag, group in by_tag.items():
            getattr(parts.setdefault(tag, Effect()), op).extend(group)
    return parts


def effect_keys(effect: Effect) -> list[str]:
    """Every key ``effect`` writes, once each, in a stable order."""
    out: dict[str, None] = {}
    for op in _OPS:
        items = getattr(effect, op)
        if op == "ring":
            for item in items:
                out.update(dict.fromkeys(_keys_of(op, item)))
        elif items:
            out.update(dict.fromkeys(_first_keys(op, items)))
    return list(out)


def _offsets(messages: Sequence[Message]) -> tuple[dict[str, int], dict[str, int]]:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for m in messages:
        tp, off = topic_partition(m), int(m.offset() or 0)
        first[tp] = min(first.get(tp, off), off)
        last[tp] = max(last.get(tp, off), off)
    return first, last


def _ints(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


class OffsetFence:
    """The applied offsets of one consumer (a hash ``offsets_key``) and the fenced write,
    one part per hash tag."""

    def __init__(self, client: Any, offsets_key: str) -> None:
        self._r = client
        self._key = offsets_key
        self._inflight = f"{offsets_key}:inflight"
        self._apply = Script(client, _APPLY)
        self._max = Script(client, _MAX)

    def part_key(self, tag: str) -> str:
        """The fence hash of the parts of ``tag``, in its slot."""
        return f"{self._key}:{tagged(tag)}"

    async def done(self) -> dict[str, int]:
        """Last offset per topic:partition whose every part is applied."""
        return _ints(await self._r.hgetall(self._key))

    async def units(self, messages: Sequence[Message]) -> list[list[Message]]:
        """The messages not yet covered, as the units to process one after the other: those
        up to the in-flight offsets of a batch a crash interrupted first (the batch as it
        was), then the rest. Usually one unit; none when everything is covered."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._key)
        pipe.hgetall(self._inflight)
        done, inflight = (_ints(raw) for raw in await pipe.execute())
        replay: list[Message] = []
        rest: list[Message] = []
        for m in messages:
            tp, off = topic_partition(m), int(m.offset() or 0)
            applied = done.get(tp, -1)
            if off <= applied:
                continue
            (replay if off <= inflight.get(tp, -1) else rest).append(m)
        return [u for u in (replay, rest) if u]

    async def apply(self, messages: Sequence[Message], effect: Effect) -> bool:
        """Apply ``effect`` for ``messages`` (one unit of :meth:`units`, or part of one, in
        offset order): each part unless its fence already covers them. False when every
        part was refused (a replay of an applied batch)."""
        first, last = _offsets(messages)
        parts = split_effect(effect)
        await self._max(keys=[self._inflight], args=[json.dumps(last)])
        glob = parts.pop(None, None)
        tags = sorted(t for t in parts if t is not None)
        results: list[bool] = []
        for group in (
            [t for t in tags if not t.startswith(SHARD_MARK)],
            [t for t in tags if t.startswith(SHARD_MARK)],
        ):
            results += await asyncio.gather(*(self._part(t, parts[t], first, last) for t in group))
        if glob is not None:
            await self._global(glob)
        await self._max(keys=[self._key], args=[json.dumps(last)])
        return not results or any(results)

    async def _global(self, effect: Effect) -> None:
        pipe = self._r.pipeline(transaction=False)
        for key, member in effect.sadd:
            pipe.sadd(key, member)
        for key, ttl in effect.expire:
            pipe.expire(key, ttl)
        await pipe.execute()
        await asyncio.gather(
            *(self._max(keys=[k], args=[json.dumps({f: v})]) for k, f, v in effect.hmax)
        )

    async def _part(
        self, tag: str, effect: Effect, first: dict[str, int], last: dict[str, int]
    ) -> bool:
        ops: dict[str, Any] = {"first": first, "last": last}
        # Tuples encode as JSON arrays as they are: no copies of what can be thousands of
        # writes. cjson decodes an empty JSON array as an empty table, which ipairs accepts.
        for op in _OPS:
            if op not in _BULK:
                ops[_LUA_NAME.get(op, op)] = getattr(effect, op)
        fence = self.part_key(tag)
        keys = [fence, *effect_keys(effect)]
        result = await self._apply(
            keys=keys, args=[json.dumps(ops), PART_FENCE_TTL_S, *_bulk(effect)]
        )
        return bool(result)


def _bulk(effect: Effect) -> list[Any]:
    """The increments and plain sets of ``effect`` (the bulk of a batch: thousands of
    writes) as flat arguments, which the Lua call reads in place: decoding them from one JSON
    document cost Redis about as much as the writes themselves. ``n, (key, ttl, k, (field,
    value) × k) × n`` for the increments (hashes without a field skipped), then ``n, (key,
    value, ttl) × n`` for the sets. The arguments go out packed in one C call
    (:class:`shared.runtime.redis_client.Script`), not one Python encode each."""
    incr = [i for i in effect.incr if i[2]]
    out: list[Any] = [len(incr)]
    for key, ttl, fields in incr:
        out += (key, ttl, len(fields))
        out += chain.from_iterable(fields.items())
    out.append(len(effect.set))
    out += chain.from_iterable(effect.set)
    return out
