"""Per-key rate limits: one token bucket per API key and kind, shared by every gateway.

A bucket holds at most ``capacity`` tokens and refills at ``rate`` tokens a second; a
request (or an event) takes one. The buckets live in Redis (:class:`SharedBuckets`, one
Lua call per request, keyed in the key's own hash tag and expiring once full), so N
gateway replicas together allow a key the configured rate. When Redis does not answer
within the gateway's short Redis timeout, the replica's own in-memory bucket
(:class:`TokenBuckets`) decides instead: a Redis outage never blocks the API, and a key
may then use up to N times the rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_MAX_KEYS = 10_000
"""Buckets kept per limiter; beyond this the full (idle) ones are dropped."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """``take(key, n)``: 0 when ``n`` tokens were taken, else the seconds to wait.

    ``rate`` 0 switches the limiter off. A request for more tokens than ``capacity`` is
    served once the bucket is full (it takes the bucket into debt), so any request the
    other limits allow can eventually pass.
    """

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self._clock = clock
        self._buckets: dict[object, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: object, n: float = 1.0) -> float:
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        needed = min(n, self.capacity)
        if bucket.tokens >= needed:
            bucket.tokens -= n
            return 0.0
        return (needed - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.rate >= self.capacity
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= _MAX_KEYS:
            self._buckets.clear()


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
local needed = math.min(n, cap)
local wait = 0
if tokens >= needed then tokens = tokens - n else wait = (needed - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'at', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[1], math.ceil((cap - tokens) / rate) + 1)
return string.format('%.6f', wait)
"""


class SharedBuckets:
    """:class:`TokenBuckets` kept in Redis for every gateway replica (see the module
    docstring); ``local`` answers when no Redis client is given or Redis fails."""

    def __init__(self, local: TokenBuckets, prefix: str, kind: str) -> None:
        self.local = local
        self._prefix = f"{prefix}gw:rate:"
        self._kind = kind
        self._scripts: dict[int, object] = {}

    @property
    def enabled(self) -> bool:
        return self.local.enabled

    def key(self, key: object) -> str:
        return f"{self._prefix}{{{self._kind}:{key}}}"

    async def take(self, key: object, n: float = 1.0, redis: aioredis.Redis | None = None) -> float:
        """0 when ``n`` tokens were taken, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        if redis is None:
            return self.local.take(key, n)
        script = self._scripts.get(id(redis))
        if script is None:
            script = self._scripts[id(redis)] = redis.register_script(_TAKE)
        try:
            wait = await script(  # type: ignore[operator]
                keys=[self.key(key)], args=[self.local.rate, self.local.capacity, n]
            )
        except (RedisError, OSError):
            return self.local.take(key, n)
        return float(wait)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
