"""Routing maths: the posterior, the floor, the trust rule, the trend and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.router.store import Counted, EffectBuilder
from shared.routing.metric_labels import OTHER, LabelCap
from shared.routing.model import (
    DEFAULT_FLOOR,
    Posterior,
    RoutingParams,
    beta_interval,
    choose,
    credible_top,
    decay_factor,
    prob_better,
    seed_of,
    traffic_share,
    two_proportion_z,
)
from shared.routing.simulate import constant, lead_lost_after, simulate
from shared.routing.state import DecisionRecord, PathCounts, RouteKeys, posterior_at
from shared.routing.trend import trend

PARAMS = RoutingParams()
ZERO3 = np.zeros(3)
LEAD_LOST_WITHIN = 1_500
"""Outcomes (at 200 an hour, half-life 6 h) after a 0.9 → 0.5 drop until the next path leads."""


def post(s: list[float], f: list[float], n: list[int] | None = None) -> Posterior:
    counts = n if n is not None else [int(a + b) for a, b in zip(s, f, strict=True)]
    return Posterior(np.array(s, float), np.array(f, float), np.array(counts, np.int64))


def test_decay_halves_every_half_life() -> None:
    assert decay_factor(6 * 3600.0, 6 * 3600.0) == pytest.approx(0.5)
    assert decay_factor(12 * 3600.0, 6 * 3600.0) == pytest.approx(0.25)
    assert decay_factor(-10.0, 3600.0) == 1.0


def test_prob_better_matches_hand_computed_normal_approximation() -> None:
    # Beta(91, 11): mean 91/102, var 91·11/(102²·103); Beta(11, 11): mean 0.5, var 1/92.
    p = prob_better(post([90, 10], [10, 10]))
    m1, v1 = 91 / 102, 91 * 11 / (102**2 * 103)
    z = (m1 - 0.5) / math.sqrt(v1 + 121 / (22**2 * 23))
    assert p[0, 1] == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert p[0, 0] == 0.5 and p[1, 0] == pytest.approx(1 - p[0, 1])


def test_credible_top_keeps_paths_no_one_credibly_beats() -> None:
    # 900/1000 vs 880/1000 are not credibly different; 600/1000 is beaten by both.
    top = credible_top(post([900, 880, 600], [100, 120, 400]), 0.95)
    assert top.tolist() == [True, True, False]


def test_decisions_are_reproducible_from_their_id() -> None:
    state = post([60, 55, 50], [40, 45, 50])
    picks = [choose(state, ZERO3, ZERO3, f"d{i}", PARAMS) for i in range(50)]
    again = [choose(state, ZERO3, ZERO3, f"d{i}", PARAMS) for i in range(50)]
    assert picks == again and len(set(picks)) > 1
    assert seed_of("abc") == seed_of("abc") != seed_of("abd")


def test_a_goal_with_no_history_starts_even() -> None:
    share = traffic_share(Posterior.empty(3), ZERO3, ZERO3, 7, PARAMS, draws=30_000)
    assert share == pytest.approx([1 / 3] * 3, abs=0.015)


def test_a_young_path_keeps_the_floor_beside_strong_old_ones() -> None:
    state = post([900, 880, 0], [100, 120, 0])
    share = traffic_share(state, ZERO3, ZERO3, 3, PARAMS, draws=40_000)
    assert share[2] >= DEFAULT_FLOOR - 0.01
    # Once it has 50 (bad) outcomes the floor lifts.
    grown = post([900, 880, 5], [100, 120, 45])
    assert traffic_share(grown, ZERO3, ZERO3, 3, PARAMS, draws=40_000)[2] < 0.01


def test_cost_breaks_ties_only_inside_the_credible_top_set() -> None:
    costs = np.array([5.0, 0.1, 0.0])
    # 0 and 1 are not credibly different: the cheaper (1) takes their traffic; 2 is
    # credibly worse and gains nothing from being the cheapest.
    state = post([900, 890, 600], [100, 110, 400])
    share = traffic_share(state, costs, ZERO3, 1, PARAMS, draws=20_000)
    assert share[1] > 0.99 and share[2] < 0.001
    # Credibly better (0) is never replaced by a cheaper path.
    clear = post([950, 800, 600], [50, 200, 400])
    assert traffic_share(clear, costs, ZERO3, 1, PARAMS, draws=20_000)[0] > 0.999


def test_latency_breaks_a_cost_tie() -> None:
    state = post([900, 895], [100, 105])
    share = traffic_share(state, np.zeros(2), np.array([80.0, 20.0]), 1, PARAMS, draws=5_000)
    assert share[1] > 0.99


def test_posterior_at_decays_the_stored_sums_to_now() -> None:
    counts = [PathCounts(8.0, 2.0, 1_000, 10, 0, 0, 0.0), PathCounts(0.0, 0.0, 0, 0, 0, 0, 0.0)]
    p = posterior_at(counts, 1_000 + 6 * 3600 * 1000, 6 * 3600.0)
    assert p.s.tolist() == [4.0, 0.0] and p.f.tolist() == [1.0, 0.0]
    assert p.n.tolist() == [10, 0]


def test_beta_interval_and_two_proportion_z() -> None:
    lo, hi = beta_interval(0.0, 0.0)
    assert (lo, hi) == pytest.approx((0.025, 0.975))
    # p1 = 0.6 of 100, p2 = 0.5 of 100: pooled 0.55, se = sqrt(0.55·0.45·0.02).
    assert two_proportion_z(60, 100, 50, 100) == pytest.approx(0.1 / math.sqrt(0.00495))


@pytest.mark.parametrize(
    ("recent", "base", "expected"),
    [
        ((45, 100), (90, 100), "degrading"),
        ((95, 100), (80, 100), "improving"),
        ((88, 100), (90, 100), "stable"),
        ((9, 10), (90, 100), "insufficient"),
    ],
)
def test_trend(recent: tuple[float, float], base: tuple[float, float], expected: str) -> None:
    assert trend(recent[0], recent[1], base[0], base[1]).trend == expected


def test_label_cap_bounds_the_series() -> None:
    cap = LabelCap(max_goals=2, max_paths=2)
    assert cap.pair("g1", "a") == ("g1", "a")
    assert cap.pair("g1", "b") == ("g1", "b")
    assert cap.pair("g1", "c") == ("g1", OTHER)
    assert cap.pair("g2", "a") == ("g2", "a")
    assert cap.pair("g3", "a") == (OTHER, OTHER)
    assert cap.pair("g1", "a") == ("g1", "a")


def test_effect_builder_folds_outcomes_of_a_path_into_one_decayed_add() -> None:
    h = 3_600_000.0
    b = EffectBuilder(RouteKeys("p:"), h, 60)
    d = DecisionRecord("acme", "goal", "a", False, int(h))
    b.outcome("x", Counted(d, 1.0))
    b.outcome("y", Counted(DecisionRecord("acme", "goal", "a", False, int(2 * h)), 0.25))
    b.outcome("z", Counted(DecisionRecord("acme", "goal", "a", True, int(2 * h)), 1.0))
    e = b.build()
    ((key, half, t, s, f),) = e.decay
    # 1 at t = 1 h decays to 0.5 at 2 h; then + 0.25 success and + 0.75 failure.
    assert (key, half, t) == ("p:route:post:{r:acme:goal}:a", h, int(2 * h))
    assert (s, f) == pytest.approx((0.75, 0.75))
    post_incr = dict((k, v) for k, _, v in e.incr)["p:route:post:{r:acme:goal}:a"]
    assert post_incr == {"n": 2, "fn": 1, "fs": 1_000_000}


# --- simulations -----------------------------------------------------------------------


def test_best_of_three_gets_ninety_percent_after_two_thousand_outcomes() -> None:
    for seed in range(3):
        r = simulate(constant([0.9, 0.8, 0.6], 3_000), seed=seed)
        assert r.share(0, 2_000) >= 0.90


def test_every_path_keeps_the_floor_until_fifty_outcomes() -> None:
    for seed in range(3):
        r = simulate(constant([0.9, 0.8, 0.6], 1_000), seed=seed)
        for path in range(3):
            reached = int(np.flatnonzero(np.cumsum(r.choices == path) == 50)[0]) + 1
            assert r.share(path, 0, reached) >= DEFAULT_FLOOR


def test_a_degraded_path_loses_its_lead() -> None:
    rates = constant([0.9, 0.8, 0.6], 2_000 + 3_000)
    rates[2_000:, 0] = 0.5
    for seed in range(3):
        r = simulate(rates, seed=seed)
        assert r.share(0, 1_000, 2_000) > 0.9
        lost = lead_lost_after(r, 0, 1, 2_000, 100)
        assert 0 < lost <= LEAD_LOST_WITHIN


def test_equal_success_the_cheaper_path_wins_most() -> None:
    r = simulate(constant([0.8, 0.8], 3_000), seed=4, costs=np.array([1.0, 0.1]))
    assert r.share(1, 500) > 0.8


def test_credibly_better_wins_however_cheap_the_other() -> None:
    cheap_other = simulate(constant([0.9, 0.7], 3_000), seed=5, costs=np.array([10.0, 1e-6]))
    no_costs = simulate(constant([0.9, 0.7], 3_000), seed=5)
    assert cheap_other.share(0, 1_000) > 0.95
    assert cheap_other.share(0, 1_000) >= no_costs.share(0, 1_000) - 0.01


def test_regret_against_uniform_and_epsilon_greedy(capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = {
        "0.9/0.8/0.6": constant([0.9, 0.8, 0.6], 3_000),
        "0.9→0.5 at 2000": constant([0.9, 0.8, 0.6], 5_000),
    }
    scenarios["0.9→0.5 at 2000"][2_000:, 0] = 0.5
    lines, results = [], []
    for name, rates in scenarios.items():
        means = {
            policy: float(np.mean([simulate(rates, policy, seed=s).regret[-1] for s in range(5)]))
            for policy in ("thompson", "epsilon", "uniform")
        }
        lines.append(
            f"{name}: {len(rates)} outcomes, mean cumulative regret over 5 seeds: "
            + ", ".join(f"{p} {v:.1f}" for p, v in means.items())
        )
        results.append(means)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    for means in results:
        assert means["thompson"] < means["uniform"] / 3
        assert means["thompson"] < means["epsilon"]
