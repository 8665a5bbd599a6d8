"""Duplicate detection by (tenant, event_id) in Redis, safe under transaction replays.

A claim is ``SET <prefix>ingest:<kind>:{~dS}:<tenant>/<event_id> <position>|<model
key>|<event ms> NX GET`` with a TTL of the label horizon; ``S`` is the dedupe shard of
``tenant/event_id`` (``shared.runtime.redis_client.shard_tag``), so on Redis Cluster one Lua
call claims one shard's events and stays in one slot (a single Redis takes the whole batch
in one call). Event ids are unique within a tenant only: another tenant's event with the
same id is neither a duplicate nor a prediction its labels can find. The position
(topic:partition:offset of the source message) makes replays safe: when a transaction aborts
after its claims were written, the same message comes back, finds claims holding its own
position and keeps its events, while a real duplicate (another message) finds someone else's
position and is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.runtime import redis_client
from shared.runtime.redis_client import Script, shard_tag

# One round trip and one command for a whole batch: per-command client overhead, not Redis,
# dominates a pipeline of thousands of SETs. Returns, per key, the previous value or "".
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, ARGV[i + 1], 'NX', 'GET', 'EX', ARGV[1]) or ''
end
return out
"""


class Claim(NamedTuple):
    """One event's claim (a tuple: one is built per event)."""

    tenant: str
    event_id: str
    position: str
    model_key: str = ""
    event_time_ms: int = 0

    @property
    def value(self) -> str:
        return f"{self.position}|{self.model_key}|{self.event_time_ms}"


@dataclass(frozen=True, slots=True)
class SeenPrediction:
    model_key: str
    event_time_ms: int


class Deduper:
    def __init__(self, client: Any, prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._claim = Script(client, _CLAIM)
        self._cluster = redis_client.is_cluster(client)

    def _key(self, kind: str, tenant: str, event_id: str) -> str:
        scoped = f"{tenant}/{event_id}"
        return f"{self._prefix}ingest:{kind}:{shard_tag('d', scoped)}:{scoped}"

    async def claim(self, kind: str, claims: Sequence[Claim]) -> list[bool]:
        """True for each claim that is new (or this message's own, replayed)."""
        if not claims:
            return []
        keys = [self._key(kind, c.tenant, c.event_id) for c in claims]
        by_shard: dict[str, list[int]] = {}
        if self._cluster:
            for i, key in enumerate(keys):
                by_shard.setdefault(redis_client.hash_tag(key) or "", []).append(i)
        else:
            # One Redis holds every shard: one call (one round trip) for the whole batch.
            by_shard[""] = list(range(len(keys)))
        answers = await asyncio.gather(
            *(
                self._claim(
                    keys=[keys[i] for i in rows], args=[self._ttl, *(claims[i].value for i in rows)]
                )
                for rows in by_shard.values()
            )
        )
        previous: list[Any] = [None] * len(claims)
        for rows, answer in zip(by_shard.values(), answers, strict=True):
            for i, old in zip(rows, answer, strict=True):
                previous[i] = old
        keep = []
        for c, old in zip(claims, previous, strict=True):
            text = old.decode() if isinstance(old, bytes) else str(old)
            keep.append(not text or text.split("|", 1)[0] == c.position)
        return keep

    async def seen_predictions(
        self, tenant: str, event_ids: Sequence[str]
    ) -> list[SeenPrediction | None]:
        """Model and event time of ``tenant``'s predictions already ingested (for labels
        lacking them)."""
        if not event_ids:
            return []
        values = await redis_client.mget(
            self._client, [self._key("seen", tenant, e) for e in event_ids]
        )
        out: list[SeenPrediction | None] = []
        for raw in values:
            if raw is None:
                out.append(None)
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            _, model_key, ms = text.split("|", 2)
            out.append(SeenPrediction(model_key, int(ms)) if model_key else None)
        return out
