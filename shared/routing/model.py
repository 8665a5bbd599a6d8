"""Choosing a path: discounted Thompson sampling with an exploration floor and the trust rule.

Per (tenant, goal, path) the router keeps discounted success and failure sums ``s`` and
``f`` (a score in [0, 1] adds ``score`` to ``s`` and ``1 − score`` to ``f``) and the raw
count of outcomes ``n``. Both sums decay with event time: a weight halves every
``half_life`` seconds (``γ^Δt`` with ``γ = 2^(−1/half_life)``), so the posterior of a path
is Beta(s + 1, f + 1) over the recent past, and widens again when a path sees no traffic.

One decision, in order:

1. **Floor.** Paths with fewer than ``min_outcomes`` outcomes ("young") share a fixed
   lottery: with probability ``floor × #young`` (capped at 1) one young path is drawn
   uniformly, so each keeps at least ``floor`` of the traffic. A goal whose paths are all
   young is therefore even.
2. **Thompson.** Otherwise one θ per path is drawn from its Beta posterior; the largest wins.
3. **Trust.** The *credible top set* is the paths that no other path credibly beats
   (``P(p_k > p_j) ≥ credible`` for no k). If the Thompson winner is in that set, the
   cheapest member of the set (cost, then latency) takes its place; a winner outside the
   set (exploration of a credibly worse path) is kept as drawn. Cost therefore never moves
   traffic to a path that some other path credibly beats, and only decides between paths
   whose success rates are not credibly different.

Every random number comes from a generator seeded from the decision id, so a decision is
reproducible from its id and the state it read.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

FloatArray = NDArray[np.float64]

DEFAULT_HALF_LIFE_S = 6 * 3600.0
DEFAULT_FLOOR = 1 / 6.3
DEFAULT_MIN_OUTCOMES = 50
DEFAULT_CREDIBLE = 0.95


@dataclass(frozen=True, slots=True)
class RoutingParams:
    half_life_s: float = DEFAULT_HALF_LIFE_S
    floor: float = DEFAULT_FLOOR
    min_outcomes: int = DEFAULT_MIN_OUTCOMES
    credible: float = DEFAULT_CREDIBLE
    """P(p_a > p_b) at or above which a is credibly better than b."""


@dataclass(frozen=True, slots=True)
class Posterior:
    """Discounted sums of every candidate at the time of the decision (arrays of length k)."""

    s: FloatArray
    f: FloatArray
    n: NDArray[np.int64]

    @classmethod
    def empty(cls, k: int) -> Posterior:
        return cls(np.zeros(k), np.zeros(k), np.zeros(k, dtype=np.int64))

    @property
    def alpha(self) -> FloatArray:
        return self.s + 1.0

    @property
    def beta(self) -> FloatArray:
        return self.f + 1.0

    @property
    def mean(self) -> FloatArray:
        a, b = self.alpha, self.beta
        return a / (a + b)


def decay_factor(elapsed_s: float | FloatArray, half_life_s: float) -> FloatArray:
    """γ^Δt for Δt ≥ 0 (a negative Δt, a clock step, counts as none)."""
    return np.exp2(-np.maximum(np.asarray(elapsed_s, dtype=np.float64), 0.0) / half_life_s)


def seed_of(decision_id: str) -> int:
    """The generator seed of a decision: the first 8 bytes of SHA-256 of its id."""
    return int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:8], "little")


def prob_better(post: Posterior) -> FloatArray:
    """P(p_i > p_j) for every pair, by the normal approximation of two Beta posteriors
    (k × k; the diagonal is 0.5)."""
    a, b = post.alpha, post.beta
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1.0))
    diff = mean[:, None] - mean[None, :]
    sd = np.sqrt(var[:, None] + var[None, :])
    return ndtr(diff / sd)


def credible_top(post: Posterior, credible: float) -> NDArray[np.bool_]:
    """Paths that no other path credibly beats."""
    beaten = np.asarray((prob_better(post) >= credible).any(axis=0), dtype=np.bool_)
    return np.logical_not(beaten)


def _tie_order(costs: FloatArray, latencies: FloatArray) -> NDArray[np.int64]:
    """Rank of every path by (cost, latency): equal pairs share a rank."""
    pairs = list(zip(costs.tolist(), latencies.tolist(), strict=True))
    distinct = sorted(set(pairs))
    rank = {p: i for i, p in enumerate(distinct)}
    return np.array([rank[p] for p in pairs], dtype=np.int64)


def choose_many(
    post: Posterior,
    costs: FloatArray,
    latencies: FloatArray,
    rng: np.random.Generator,
    draws: int,
    params: RoutingParams,
) -> NDArray[np.int64]:
    """``draws`` independent decisions on one state (vectorised); indices of the chosen paths.

    ``choose`` is this with one draw, so the traffic share a policy reports is the share of
    exactly the rule decide applies.
    """
    k = len(post.s)
    young = np.flatnonzero(post.n < params.min_outcomes)
    u = rng.random(draws)
    theta = rng.beta(post.alpha, post.beta, size=(draws, k))
    winner = np.argmax(theta, axis=1)
    top = credible_top(post, params.credible)
    rank = _tie_order(costs, latencies)
    if top.any():
        best_rank = rank[top].min()
        cheapest = top & (rank == best_rank)
        in_top = top[winner]
        keep = cheapest[winner]
        # Among the cheapest of the top set, the one with the largest θ.
        masked = np.where(cheapest[None, :], theta, -np.inf)
        replace = np.argmax(masked, axis=1)
        winner = np.where(in_top & ~keep, replace, winner)
    if len(young):
        mass = 1.0 if len(young) == k else min(len(young) * params.floor, 1.0)
        lottery = u < mass
        pick = young[np.minimum((u / mass * len(young)).astype(np.int64), len(young) - 1)]
        winner = np.where(lottery, pick, winner)
    return winner.astype(np.int64)


def choose(
    post: Posterior,
    costs: FloatArray,
    latencies: FloatArray,
    decision_id: str,
    params: RoutingParams,
) -> int:
    """The index of the path one decision takes, reproducible from ``decision_id``."""
    rng = np.random.default_rng(seed_of(decision_id))
    return int(choose_many(post, costs, latencies, rng, 1, params)[0])


def traffic_share(
    post: Posterior,
    costs: FloatArray,
    latencies: FloatArray,
    seed: int,
    params: RoutingParams,
    draws: int = 4_000,
) -> FloatArray:
    """Share of decisions each path would get on this state, estimated from seeded draws."""
    picks = choose_many(post, costs, latencies, np.random.default_rng(seed), draws, params)
    return np.bincount(picks, minlength=len(post.s)) / draws


def beta_interval(s: float, f: float, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed credible interval of Beta(s + 1, f + 1)."""
    from scipy.stats import beta as beta_dist

    lo, hi = beta_dist.ppf([(1 - level) / 2, (1 + level) / 2], s + 1.0, f + 1.0)
    return float(lo), float(hi)


def two_proportion_z(s1: float, n1: float, s2: float, n2: float) -> float:
    """z of p1 − p2 with the pooled standard error (0 when either side is empty)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0
    return (s1 / n1 - s2 / n2) / se
