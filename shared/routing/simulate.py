"""Seeded simulations of routing policies on Bernoulli paths (for tests and the README).

Outcomes arrive at a steady ``outcomes_per_hour`` and each is known at once; the Thompson
policy is exactly :func:`shared.routing.model.choose` on discounted sums kept the way the
router worker keeps them. Uniform and epsilon-greedy run on the same success rates and the
same outcome draws for comparison. Regret is Σ (best rate − chosen path's rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from shared.routing.model import FloatArray, Posterior, RoutingParams, choose, decay_factor

Policy = Literal["thompson", "uniform", "epsilon"]


@dataclass(frozen=True, slots=True)
class SimResult:
    choices: NDArray[np.int64]
    rewards: FloatArray
    regret: FloatArray
    """Cumulative regret after each step."""

    def share(self, path: int, start: int = 0, stop: int | None = None) -> float:
        window = self.choices[start:stop]
        return float(np.mean(window == path)) if len(window) else 0.0


def simulate(
    rates: FloatArray,
    policy: Policy = "thompson",
    *,
    seed: int = 0,
    costs: FloatArray | None = None,
    outcomes_per_hour: float = 200.0,
    params: RoutingParams | None = None,
    epsilon: float = 0.1,
) -> SimResult:
    """Run ``len(rates)`` decisions; ``rates`` is steps × paths (a path's success rate may
    change over time)."""
    params = params or RoutingParams()
    steps, k = rates.shape
    costs = np.zeros(k) if costs is None else costs
    latencies = np.zeros(k)
    outcome_rng = np.random.default_rng(seed)
    luck = outcome_rng.random((steps, k))
    policy_rng = np.random.default_rng(seed + 1)
    step_decay = float(decay_factor(3600.0 / outcomes_per_hour, params.half_life_s))
    s, f = np.zeros(k), np.zeros(k)
    n = np.zeros(k, dtype=np.int64)
    wins, tries = np.zeros(k), np.zeros(k)
    choices = np.empty(steps, dtype=np.int64)
    rewards = np.empty(steps)
    for i in range(steps):
        if policy == "thompson":
            c = choose(Posterior(s, f, n), costs, latencies, f"sim-{seed}-{i}", params)
        elif policy == "uniform":
            c = int(policy_rng.integers(k))
        elif (tries == 0).any():
            c = int(np.flatnonzero(tries == 0)[0])
        elif policy_rng.random() < epsilon:
            c = int(policy_rng.integers(k))
        else:
            c = int(np.argmax(wins / tries))
        r = float(luck[i, c] < rates[i, c])
        s *= step_decay
        f *= step_decay
        s[c] += r
        f[c] += 1.0 - r
        n[c] += 1
        wins[c] += r
        tries[c] += 1
        choices[i], rewards[i] = c, r
    best = rates.max(axis=1)
    regret = np.cumsum(best - rates[np.arange(steps), choices])
    return SimResult(choices, rewards, regret)


def constant(rates: list[float], steps: int) -> FloatArray:
    return np.tile(np.asarray(rates, dtype=np.float64), (steps, 1))


def lead_lost_after(result: SimResult, leader: int, rival: int, start: int, window: int) -> int:
    """Decisions after ``start`` until ``rival`` gets more of a ``window``-decision moving
    window than ``leader`` (−1 if it never does)."""
    picks = result.choices[start:]
    lead = np.convolve(picks == leader, np.ones(window), "valid")
    rival_n = np.convolve(picks == rival, np.ones(window), "valid")
    over = np.flatnonzero(rival_n > lead)
    return int(over[0] + window) if len(over) else -1
