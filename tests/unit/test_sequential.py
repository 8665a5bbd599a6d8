"""The always-valid paired test (shared.recalibration.sequential): hand-checked numbers,
its decisions, and a simulation showing the false-decision rate holds when looking after
every batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.recalibration.sequential import (
    CONTINUE,
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    PairedSums,
    SequentialConfig,
    confidence_sequence,
    decide,
    half_width,
    mixing_rate,
)


def sums(values: list[float] | np.ndarray) -> PairedSums:
    d = np.asarray(values, dtype=np.float64)
    return PairedSums(int(d.size), float(d.sum()), float(np.square(d).sum()))


def test_half_width_by_hand() -> None:
    # t = 100, σ = 1, α = 0.05, r = 0.1: t·r² = 1, 2·2/100 = 0.04,
    # ln(√2 / 0.05) = ln 28.28427 = 3.342307, √(0.04 · 3.342307) = 0.365640
    assert half_width(100, 1.0, 0.05, 0.1) == pytest.approx(0.365640, abs=1e-6)
    # σ scales the width; no events, no interval
    assert half_width(100, 2.0, 0.05, 0.1) == pytest.approx(0.731279, abs=1e-6)
    assert half_width(0, 1.0, 0.05, 0.1) == math.inf


def test_mixing_rate_by_hand() -> None:
    # a = −2 ln 0.05 = 5.991465, ln(a + 1) = 1.944692, √(7.936157 / 1000) = 0.0890851
    assert mixing_rate(1000, 0.05) == pytest.approx(0.0890851, abs=1e-7)


def test_paired_sums_by_hand() -> None:
    s = sums([1.0, 2.0, 3.0, 6.0])  # mean 3, E[d²] = 50/4 = 12.5, var 3.5
    assert s.mean == 3.0
    assert s.std == pytest.approx(math.sqrt(3.5))
    ci = confidence_sequence(s, 0.05, 0.1)
    w = half_width(4, math.sqrt(3.5), 0.05, 0.1)
    assert (ci.lo, ci.hi) == pytest.approx((3.0 - w, 3.0 + w))


CONFIG = SequentialConfig(alpha=0.05, min_events=100, max_events=2000, tuned_for=500)


def test_too_few_events_continue() -> None:
    v = decide(sums([0.5] * 99), sums([0.1] * 99), CONFIG)
    assert v.decision == CONTINUE and "need 100" in v.reason


def test_clearly_better_promotes_and_worse_rolls_back() -> None:
    rng = np.random.default_rng(1)
    better = rng.normal(0.3, 0.5, 400)
    v = decide(sums(better), sums(better / 10), CONFIG)
    assert v.decision == PROMOTE and v.nll is not None and v.nll.lo > 0
    v = decide(sums(-better), sums(-better / 10), CONFIG)
    assert v.decision == ROLLBACK and v.nll is not None and v.nll.hi < 0
    # better on log loss but credibly worse on Brier: rolled back, never promoted
    v = decide(sums(better), sums(-better / 10), CONFIG)
    assert v.decision == ROLLBACK and "Brier" in v.reason


def test_review_band_rolls_back_whatever_the_losses() -> None:
    v = decide(sums([0.5] * 10), sums([0.1] * 10), CONFIG, review_rate_delta=0.15)
    assert v.decision == ROLLBACK and "review rate" in v.reason
    v = decide(sums([0.5] * 10), sums([0.1] * 10), CONFIG, review_rate_delta=-0.05)
    assert v.decision == CONTINUE


def test_no_difference_is_inconclusive_at_the_maximum() -> None:
    d = np.tile([1.0, -1.0], 1000)
    v = decide(sums(d), sums(d / 10), CONFIG)
    assert v.decision == INCONCLUSIVE
    v = decide(sums(d[:1000]), sums(d[:1000] / 10), CONFIG)
    assert v.decision == CONTINUE


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        SequentialConfig(alpha=1.5)
    with pytest.raises(ValueError, match="min_events"):
        SequentialConfig(min_events=10, max_events=5)


def _wrong_decisions(rng: np.random.Generator, reps: int, config: SequentialConfig) -> float:
    """Share of runs under the null (equal mean losses) that ever decide, looking after
    every batch of 25 labeled events up to ``max_events``."""
    decided = 0
    batch = 25
    for _ in range(reps):
        # heavy-ish tails and unequal scales, as paired log-loss differences have
        dn = rng.standard_t(5, config.max_events) * 0.4
        db = rng.normal(0.0, 0.05, config.max_events)
        cn, cn2 = np.cumsum(dn), np.cumsum(dn * dn)
        cb, cb2 = np.cumsum(db), np.cumsum(db * db)
        for t in range(batch, config.max_events + 1, batch):
            i = t - 1
            v = decide(
                PairedSums(t, float(cn[i]), float(cn2[i])),
                PairedSums(t, float(cb[i]), float(cb2[i])),
                config,
            )
            if v.decision in (PROMOTE, ROLLBACK):
                decided += 1
                break
    return decided / reps


def test_false_decision_rate_holds_under_the_null_with_continuous_looks() -> None:
    config = SequentialConfig(alpha=0.05, min_events=100, max_events=2000, tuned_for=500)
    rate = _wrong_decisions(np.random.default_rng(20261206), 400, config)
    # α = 0.05 with 400 runs: the binomial 2-sigma slack is 0.022
    assert rate <= 0.05 + 0.022, rate


def test_a_naive_fixed_interval_would_not_hold() -> None:
    """The same looks with a fixed-sample 95 % interval decide far more often: the reason
    for the confidence sequence."""
    rng = np.random.default_rng(7)
    wrong = 0
    for _ in range(200):
        d = rng.normal(0.0, 1.0, 2000)
        c, c2 = np.cumsum(d), np.cumsum(d * d)
        for t in range(100, 2001, 25):
            mean = c[t - 1] / t
            sd = math.sqrt(max(c2[t - 1] / t - mean**2, 0.0))
            if abs(mean) > 1.96 * sd / math.sqrt(t):
                wrong += 1
                break
    assert wrong / 200 > 0.15
