"""Redis layout of the router's state, and its readers (the router worker is the one writer).

Keys (``P`` = Redis prefix; tenant, goal and path are percent-encoded, so ``:`` separates;
``{r:t:g}`` = the route of tenant t and goal g as a hash tag, so a goal's paths share one
Redis Cluster slot; ``{~rS}`` / ``{~eS}`` = the shard of a decision id / of a
``tenant/event id``, ``shared.runtime.redis_client.shard_tag``):

- ``P route:post:{r:t:g}:{p}`` hash — ``s``, ``f``: discounted success / failure sums at
  reference time ``t`` (ms); ``n``: outcomes counted (raw); ``d``: decisions routed there;
  ``fn``, ``fs``: outcomes and successes (×1e6) of forced or fallback decisions, shown but
  never learned from.
- ``P route:hours:{r:t:g}:{p}`` / ``route:days:…`` hash — per event-time hour (the last
  48) and day (the last 31): field ``bucket × 10 + 0`` = successes ×1e6, ``+ 1`` =
  outcomes. They feed the trend (recent 24 h against days 7–30).
- ``P route:cost:{r:t:g}:{p}`` string — the path's cost and latency as last given.
- ``P route:goal:{r:t:g}`` set — paths with state; ``P route:goals:{t}`` set — goals (no
  tag: written before the fenced calls).
- ``P route:dec:{~rS}:{decision id}`` string — tenant, goal, path, forced, decided-at (a TTL).
- ``P route:out:{~rS}:{decision id}`` — present once the decision's outcome is counted.
- ``P route:ev:{~eS}:{t}:{event id}`` — decision id and predicted label of a routed
  prediction, until its label comes.
- ``P route:lab:{~eS}:{t}:{event id}`` — a label that came before its routed prediction
  (kept a short while, only for models that carry routed predictions or labels of unknown
  model).
- ``P route:models`` set — model version keys that have carried a routed prediction.
- ``P route:pend:{~rS}:{decision id}`` — an outcome that came before its decision record.
- ``P route:offsets`` — the offset fence of the router's consumer (with its in-flight hash
  and one fence per tag, ``shared.runtime.offset_fence``).
- ``P route:generation`` — names the router's consumer group; a Redis without it (state
  lost) gets a new one, whose group reads the topics from the beginning: a rebuild.

Route parts of a batch are applied before the shard parts (whose records the batch read):
a crash between two shard parts can at worst leave a spent event link in place until its
TTL, which a later duplicate label finds counted already; no count changes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import redis.asyncio as aioredis

from shared.routing.model import Posterior, decay_factor
from shared.runtime.redis_client import shard_tag, tagged

SEP = "\x1f"
MICRO = 1_000_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HOURS_KEPT = 48
DAYS_KEPT = 31
ROUTE_DECISION_KEY = "caliber.route_decision"
"""Metadata key of a prediction made on a routed decision: its value is the decision id."""


def _q(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class RouteKeys:
    prefix: str

    @staticmethod
    def route(tenant: str, goal: str) -> str:
        """The hash tag of one goal of one tenant."""
        return tagged(f"r:{_q(tenant)}:{_q(goal)}")

    def post(self, tenant: str, goal: str, path: str) -> str:
        return f"{self.prefix}route:post:{self.route(tenant, goal)}:{_q(path)}"

    def hours(self, tenant: str, goal: str, path: str) -> str:
        return f"{self.prefix}route:hours:{self.route(tenant, goal)}:{_q(path)}"

    def days(self, tenant: str, goal: str, path: str) -> str:
        return f"{self.prefix}route:days:{self.route(tenant, goal)}:{_q(path)}"

    def cost(self, tenant: str, goal: str, path: str) -> str:
        return f"{self.prefix}route:cost:{self.route(tenant, goal)}:{_q(path)}"

    def goal(self, tenant: str, goal: str) -> str:
        return f"{self.prefix}route:goal:{self.route(tenant, goal)}"

    def goals(self, tenant: str) -> str:
        return f"{self.prefix}route:goals:{_q(tenant)}"

    def decision(self, decision_id: str) -> str:
        return f"{self.prefix}route:dec:{shard_tag('r', decision_id)}:{decision_id}"

    def outcome(self, decision_id: str) -> str:
        return f"{self.prefix}route:out:{shard_tag('r', decision_id)}:{decision_id}"

    def event(self, tenant: str, event_id: str) -> str:
        tag = shard_tag("e", f"{tenant}/{event_id}")
        return f"{self.prefix}route:ev:{tag}:{_q(tenant)}:{event_id}"

    def waiting_label(self, tenant: str, event_id: str) -> str:
        tag = shard_tag("e", f"{tenant}/{event_id}")
        return f"{self.prefix}route:lab:{tag}:{_q(tenant)}:{event_id}"

    @property
    def routed_models(self) -> str:
        return f"{self.prefix}route:models"

    def pending(self, decision_id: str) -> str:
        return f"{self.prefix}route:pend:{shard_tag('r', decision_id)}:{decision_id}"

    @property
    def generation(self) -> str:
        return f"{self.prefix}route:generation"

    @property
    def offsets(self) -> str:
        return f"{self.prefix}route:offsets"


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    tenant: str
    goal: str
    path: str
    forced: bool
    decided_ms: int

    def encode(self) -> str:
        flag = "1" if self.forced else "0"
        return SEP.join([self.tenant, self.goal, self.path, flag, str(self.decided_ms)])

    @classmethod
    def decode(cls, raw: bytes | str) -> DecisionRecord:
        text = raw.decode() if isinstance(raw, bytes) else raw
        tenant, goal, path, forced, ms = text.split(SEP)
        return cls(tenant, goal, path, forced == "1", int(ms))


@dataclass(frozen=True, slots=True)
class PathCounts:
    s: float
    f: float
    t_ms: int
    n: int
    decisions: int
    forced_n: int
    forced_s: float


def _num(raw: bytes | None) -> float:
    return float(raw) if raw is not None else 0.0


async def read_counts(
    client: aioredis.Redis, keys: RouteKeys, tenant: str, goal: str, paths: list[str]
) -> list[PathCounts]:
    """The stored sums of every path, in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    for path in paths:
        pipe.hmget(keys.post(tenant, goal, path), "s", "f", "t", "n", "d", "fn", "fs")
    rows = await pipe.execute()
    return [
        PathCounts(
            _num(r[0]),
            _num(r[1]),
            int(_num(r[2])),
            int(_num(r[3])),
            int(_num(r[4])),
            int(_num(r[5])),
            _num(r[6]) / MICRO,
        )
        for r in rows
    ]


def posterior_at(counts: list[PathCounts], now_ms: int, half_life_s: float) -> Posterior:
    """The sums decayed from their reference times to ``now_ms``."""
    s = np.array([c.s for c in counts], dtype=np.float64)
    f = np.array([c.f for c in counts], dtype=np.float64)
    t = np.array([c.t_ms if c.t_ms else now_ms for c in counts], dtype=np.float64)
    g = decay_factor((now_ms - t) / 1000.0, half_life_s)
    n = np.array([c.n for c in counts], dtype=np.int64)
    return Posterior(s * g, f * g, n)


@dataclass(frozen=True, slots=True)
class Buckets:
    recent_s: float
    recent_n: float
    base_s: float
    base_n: float


def _sum_buckets(raw: dict[bytes, bytes], lo: int, hi: int) -> tuple[float, float]:
    s = n = 0.0
    for field, value in raw.items():
        code = int(field)
        bucket, kind = divmod(code, 10)
        if lo <= bucket < hi:
            if kind == 0:
                s += int(value) / MICRO
            else:
                n += int(value)
    return s, n


async def read_buckets(
    client: aioredis.Redis,
    keys: RouteKeys,
    tenant: str,
    goal: str,
    paths: list[str],
    now_ms: int,
) -> list[Buckets]:
    """Recent 24 h (hour buckets) and days 7–30 before now (day buckets) of every path."""
    pipe = client.pipeline(transaction=False)
    for path in paths:
        pipe.hgetall(keys.hours(tenant, goal, path))
        pipe.hgetall(keys.days(tenant, goal, path))
    rows = await pipe.execute()
    hour = now_ms // HOUR_MS
    day = now_ms // DAY_MS
    out = []
    for i in range(len(paths)):
        rs, rn = _sum_buckets(rows[2 * i], hour - 23, hour + 1)
        bs, bn = _sum_buckets(rows[2 * i + 1], day - 30, day - 6)
        out.append(Buckets(rs, rn, bs, bn))
    return out


async def read_paths(client: aioredis.Redis, keys: RouteKeys, tenant: str, goal: str) -> list[str]:
    members = await client.smembers(keys.goal(tenant, goal))
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


async def read_costs(
    client: aioredis.Redis, keys: RouteKeys, tenant: str, goal: str, paths: list[str]
) -> list[tuple[float | None, float | None]]:
    """Cost and latency of every path as its latest decision gave them."""
    raws = await client.mget([keys.cost(tenant, goal, p) for p in paths]) if paths else []
    out: list[tuple[float | None, float | None]] = []
    for raw in raws:
        if raw is None:
            out.append((None, None))
            continue
        text = raw.decode() if isinstance(raw, bytes) else raw
        cost, latency = text.split(SEP)
        out.append((float(cost) if cost else None, float(latency) if latency else None))
    return out
