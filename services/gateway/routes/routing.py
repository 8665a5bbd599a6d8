"""Outcome routing: decide a path, record its outcome, show the policy.

``POST /api/route/decide`` reads the candidates' counts from Redis in one pipelined round
trip, draws with a generator seeded from a new decision id (``shared.routing.model``) and
answers; the decision record goes to ``<ns>.routing`` without waiting for Kafka's ack (the
producer is idempotent with acks=all; a failed delivery is logged and counted). Nothing is
cached: every request draws again. When Redis cannot be read, the first candidate answers
with ``fallback: true`` (and is not learned from).

``POST /api/route/outcome`` checks the decision id against the router's decision records
(unknown, another tenant's → 404; already counted → 409) and publishes the outcome,
waiting for Kafka's ack. When Redis is unreachable it is published unchecked (``checked:
false``) and the router worker counts it once its state is back, if the decision is the
caller's. The router worker is the only writer of the counts.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
import zlib
from typing import Annotated

import numpy as np
from confluent_kafka import KafkaError, Message
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field, model_validator
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.gateway.auth import PRODUCE, READ, Principal, require
from services.gateway.state import state_of
from shared.routing.model import RoutingParams, beta_interval, choose, traffic_share
from shared.routing.state import (
    DecisionRecord,
    RouteKeys,
    posterior_at,
    read_buckets,
    read_costs,
    read_counts,
    read_paths,
)
from shared.routing.trend import trend

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/route", tags=["routing"])
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
MAX_CANDIDATES = 32


class Candidate(BaseModel):
    path: str = Field(
        description="a model version key or any named path", min_length=1, max_length=200
    )
    cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class DecideIn(BaseModel):
    goal: str = Field(description="the task the paths compete on", min_length=1, max_length=200)
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    force: str | None = Field(
        default=None, description="take this candidate: recorded, not learned from"
    )

    @model_validator(mode="after")
    def _paths(self) -> DecideIn:
        names = [c.path for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidates: duplicate path names {dupes}; each path once")
        if self.force is not None and self.force not in names:
            raise ValueError(f"force: {self.force!r} is not among the candidates {names}")
        return self


class DecideOut(BaseModel):
    decision_id: str
    goal: str
    path: str
    forced: bool = False
    fallback: bool = False


class OutcomeIn(BaseModel):
    decision_id: str = Field(min_length=1, max_length=64)
    success: bool | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one(self) -> OutcomeIn:
        if (self.success is None) == (self.score is None):
            raise ValueError("score: give exactly one of success (true/false) or score in [0, 1]")
        return self

    @property
    def value(self) -> float:
        if self.score is not None:
            return float(self.score)
        return 1.0 if self.success else 0.0


class OutcomeOut(BaseModel):
    decision_id: str
    score: float
    checked: bool = Field(description="false when the router state was unreachable")


class PathPolicy(BaseModel):
    path: str
    outcomes: int
    decisions: int
    success_rate: float = Field(description="posterior mean of the discounted counts")
    interval: tuple[float, float] = Field(description="95 % credible interval")
    recent_rate: float | None = Field(description="success rate of the last 24 h")
    baseline_rate: float | None = Field(description="success rate of days 7–30 before now")
    trend: str
    trend_p_value: float | None
    traffic_share: float = Field(description="share of decisions it gets now (simulated)")
    cost: float | None
    latency_ms: float | None
    forced_outcomes: int
    forced_success_rate: float | None


class PolicyOut(BaseModel):
    goal: str
    half_life_seconds: float
    floor: float
    min_outcomes: int
    paths: list[PathPolicy]


def _params(request: Request) -> RoutingParams:
    s = state_of(request).settings
    return RoutingParams(
        s.route_half_life_seconds, s.route_floor, s.route_min_outcomes, s.route_credible
    )


def _keys(request: Request) -> RouteKeys:
    return RouteKeys(state_of(request).settings.redis_prefix)


def _publish(request: Request, key: str, record: dict[str, object]) -> None:
    """Produce a decision record without waiting for its ack."""
    state = state_of(request)
    value = state.codec.encode("RouteEvent", record)

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            logger.error("decision record %s not delivered: %s", key, err)
            state.metrics.route_records_failed.inc()

    producer = state.publisher.producer
    try:
        producer.produce(state.topics.routing, value, key.encode(), on_delivery=delivered)
    except BufferError:
        producer.poll(0)
        producer.produce(state.topics.routing, value, key.encode(), on_delivery=delivered)


@router.post("/decide", response_model=DecideOut)
async def decide(
    body: DecideIn,
    request: Request,
    who: Annotated[Principal, Depends(require(PRODUCE))],
) -> DecideOut:
    decision_id = str(uuid.uuid4())
    now_ms = int(time.time() * 1000)
    paths = [c.path for c in body.candidates]
    fallback = False
    if body.force is not None:
        chosen = paths.index(body.force)
    else:
        params = _params(request)
        try:
            counts = await read_counts(
                state_of(request).route_redis, _keys(request), who.tenant, body.goal, paths
            )
        except REDIS_DOWN as exc:
            logger.warning("route state unreachable (%s); falling back", type(exc).__name__)
            fallback, chosen = True, 0
        else:
            post = posterior_at(counts, now_ms, params.half_life_s)
            costs = np.array([c.cost or 0.0 for c in body.candidates])
            latencies = np.array([c.latency_ms or 0.0 for c in body.candidates])
            chosen = choose(post, costs, latencies, decision_id, params)
    pick = body.candidates[chosen]
    _publish(
        request,
        decision_id,
        {
            "kind": "decision",
            "decision_id": decision_id,
            "tenant": who.tenant,
            "goal": body.goal,
            "path": pick.path,
            "forced": body.force is not None,
            "fallback": fallback,
            "cost": pick.cost,
            "latency_ms": pick.latency_ms,
            "score": 0.0,
            "source": "api",
            "time_ms": now_ms,
        },
    )
    return DecideOut(
        decision_id=decision_id,
        goal=body.goal,
        path=pick.path,
        forced=body.force is not None,
        fallback=fallback,
    )


def _unknown(decision_id: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        f"decision_id: {decision_id!r} is not a decision of this tenant (unknown or expired)",
    )


@router.post(
    "/outcome",
    response_model=OutcomeOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "no such decision in this tenant"},
        409: {"description": "the decision already has its outcome"},
    },
)
async def outcome(
    body: OutcomeIn,
    request: Request,
    who: Annotated[Principal, Depends(require(PRODUCE))],
) -> OutcomeOut:
    try:
        uuid.UUID(body.decision_id)
    except ValueError:
        raise _unknown(body.decision_id) from None
    state = state_of(request)
    keys = _keys(request)
    checked = True
    try:
        pipe = state.route_redis.pipeline(transaction=False)
        pipe.get(keys.decision(body.decision_id))
        pipe.exists(keys.outcome(body.decision_id))
        raw, counted = await pipe.execute()
    except REDIS_DOWN as exc:
        logger.warning("route state unreachable (%s); outcome kept unchecked", type(exc).__name__)
        checked = False
    else:
        if raw is None or DecisionRecord.decode(raw).tenant != who.tenant:
            raise _unknown(body.decision_id)
        if counted:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"decision_id: {body.decision_id!r} already has an outcome; one per decision",
            )
    record = {
        "kind": "outcome",
        "decision_id": body.decision_id,
        "tenant": who.tenant,
        "score": body.value,
        "source": "api",
        "time_ms": int(time.time() * 1000),
    }
    value = state.codec.encode("RouteEvent", record)
    await state.publisher.send([(state.topics.routing, body.decision_id.encode(), value)])
    return OutcomeOut(decision_id=body.decision_id, score=body.value, checked=checked)


@router.get("/goals", response_model=list[str])
async def goals(request: Request, who: Annotated[Principal, Depends(require(READ))]) -> list[str]:
    members = await state_of(request).route_redis.smembers(_keys(request).goals(who.tenant))
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


@router.get("/policy", response_model=PolicyOut)
async def policy(
    request: Request,
    who: Annotated[Principal, Depends(require(READ))],
    goal: Annotated[str, Query(min_length=1, max_length=200)],
) -> PolicyOut:
    client, keys, params = state_of(request).route_redis, _keys(request), _params(request)
    now_ms = int(time.time() * 1000)
    paths = await read_paths(client, keys, who.tenant, goal)
    counts = await read_counts(client, keys, who.tenant, goal, paths)
    buckets = await read_buckets(client, keys, who.tenant, goal, paths, now_ms)
    costs = await read_costs(client, keys, who.tenant, goal, paths)
    post = posterior_at(counts, now_ms, params.half_life_s)
    share = (
        traffic_share(
            post,
            np.array([c or 0.0 for c, _ in costs]),
            np.array([lat or 0.0 for _, lat in costs]),
            zlib.crc32(f"{who.tenant}\x1f{goal}".encode()),
            params,
        )
        if paths
        else np.zeros(0)
    )
    out = []
    for i, path in enumerate(paths):
        b = buckets[i]
        tr = trend(b.recent_s, b.recent_n, b.base_s, b.base_n)
        c = counts[i]
        out.append(
            PathPolicy(
                path=path,
                outcomes=c.n,
                decisions=c.decisions,
                success_rate=float(post.mean[i]),
                interval=beta_interval(float(post.s[i]), float(post.f[i])),
                recent_rate=tr.recent_rate,
                baseline_rate=tr.baseline_rate,
                trend=tr.trend,
                trend_p_value=None if tr.p_value is None or math.isnan(tr.p_value) else tr.p_value,
                traffic_share=float(share[i]),
                cost=costs[i][0],
                latency_ms=costs[i][1],
                forced_outcomes=c.forced_n,
                forced_success_rate=c.forced_s / c.forced_n if c.forced_n else None,
            )
        )
    return PolicyOut(
        goal=goal,
        half_life_seconds=params.half_life_s,
        floor=params.floor,
        min_outcomes=params.min_outcomes,
        paths=out,
    )
