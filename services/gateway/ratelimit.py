"""Per-key rate limits: one token bucket per API key and kind, in this gateway process.

A bucket holds at most ``capacity`` tokens and refills at ``rate`` tokens a second; a
request (or an event) takes one. The buckets live in memory: with N gateway processes a
key may use N times the configured rate, and a restart forgets the buckets. That is the
intended trade: no shared store on the hot path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

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


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
