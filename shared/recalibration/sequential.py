"""An always-valid comparison of two calibration maps on paired per-event losses.

For every labeled event both maps were applied to, d = loss(active) − loss(candidate) (so
d > 0 means the candidate is better). The running mean of d carries a confidence sequence:
an interval that covers the true mean difference at every number of events at once with
probability at least 1 − α, so looking after every batch and stopping at the first
decisive look does not inflate the error rate (docs/architecture.md, "Calibrator rollout").

The boundary is the two-sided normal mixture of Howard, Ramdas, McAuliffe and Sekhon
("Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021,
eq. (14)): with intrinsic time V = t·σ² and mixing precision ρ,
|S_t| ≤ sqrt((V + ρ)·ln((V + ρ)/(ρ·α²))). Divided by t and with ρ = σ²/r², the half-width is

    σ·sqrt(2(t·r² + 1)/(t²·r²) · ln(sqrt(t·r² + 1)/α))

with σ the running standard deviation of d: the asymptotic confidence sequence of
Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas ("Time-uniform central limit theory and
asymptotic confidence sequences", 2024), which needs only n, Σd and Σd², the sufficient
statistics the aggregator keeps. ``r`` is chosen so the interval is tightest at
``tuned_for`` events. The decision needs ``min_events`` first, so the plug-in σ has settled.

The rule on two losses (log loss and Brier), each given α/2 (Bonferroni), so the chance of
any wrong decision is at most α:
- promote when the log-loss interval lies above 0 and the Brier interval does not lie
  below 0 (better on log loss, not credibly worse on Brier);
- roll back when either interval lies below 0 (credibly worse), or when the review-rate
  difference leaves its band;
- otherwise continue, and at ``max_events`` stop without promoting (``inconclusive``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PROMOTE = "promote"
ROLLBACK = "rollback"
CONTINUE = "continue"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class PairedSums:
    """Sufficient statistics of one paired difference: n, Σd, Σd²."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def std(self) -> float:
        """Running (population) standard deviation of d."""
        if self.n < 2:
            return 0.0
        var = self.squares / self.n - self.mean**2
        return math.sqrt(max(var, 0.0))


def mixing_rate(tuned_for: int, alpha: float) -> float:
    """The r that makes the half-width smallest at ``tuned_for`` events (Waudby-Smith et
    al., 2024, Sec. 3.4): r = sqrt((−2 ln α + ln(−2 ln α + 1)) / t*)."""
    a = -2.0 * math.log(alpha)
    return math.sqrt((a + math.log(a + 1.0)) / tuned_for)


def half_width(n: int, std: float, alpha: float, rate: float) -> float:
    """Half-width of the normal-mixture confidence sequence at ``n`` events."""
    if n <= 0:
        return math.inf
    tr2 = n * rate * rate
    return std * math.sqrt(2.0 * (tr2 + 1.0) / (n * tr2) * math.log(math.sqrt(tr2 + 1.0) / alpha))


@dataclass(frozen=True, slots=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int


def confidence_sequence(sums: PairedSums, alpha: float, rate: float) -> Interval:
    """The level-(1 − α) interval for the mean of d after ``sums.n`` events."""
    w = half_width(sums.n, sums.std, alpha, rate)
    return Interval(sums.mean, sums.mean - w, sums.mean + w, sums.n)


@dataclass(frozen=True, slots=True)
class SequentialConfig:
    alpha: float = 0.05
    """Chance of any wrong decision (promote a map that is not better, or roll back one
    that is not worse) over the whole comparison."""
    min_events: int = 200
    max_events: int = 20_000
    tuned_for: int = 2_000
    review_band: float = 0.1
    """Largest allowed |review rate(candidate) − review rate(active)|."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 1 <= self.min_events <= self.max_events:
            raise ValueError(
                f"need 1 <= min_events <= max_events, got {self.min_events}, {self.max_events}"
            )


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: str
    reason: str
    n: int
    nll: Interval | None
    brier: Interval | None
    review_rate_delta: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    nll: PairedSums,
    brier: PairedSums,
    config: SequentialConfig,
    review_rate_delta: float | None = None,
) -> Verdict:
    """Promote, roll back, continue or stop inconclusive, from the paired sums so far.

    ``review_rate_delta`` is review rate(candidate) − review rate(active) on the same
    events (None when unknown); leaving ±``review_band`` rolls back whatever the losses say.
    """
    n = nll.n
    if review_rate_delta is not None and abs(review_rate_delta) > config.review_band:
        return Verdict(
            ROLLBACK,
            f"review rate moved by {review_rate_delta:+.4f}, beyond ±{config.review_band}",
            n, None, None, review_rate_delta,
        )  # fmt: skip
    if n < config.min_events:
        return Verdict(
            CONTINUE, f"{n} paired labeled events, need {config.min_events}",
            n, None, None, review_rate_delta,
        )  # fmt: skip
    rate = mixing_rate(config.tuned_for, config.alpha / 2)
    a = confidence_sequence(nll, config.alpha / 2, rate)
    b = confidence_sequence(brier, config.alpha / 2, rate)
    if a.hi < 0 or b.hi < 0:
        worse = "log loss" if a.hi < 0 else "Brier"
        return Verdict(
            ROLLBACK, f"candidate worse on {worse} (interval below 0)", n, a, b, review_rate_delta
        )
    if a.lo > 0:
        return Verdict(
            PROMOTE, "candidate better on log loss, not worse on Brier", n, a, b, review_rate_delta
        )
    if n >= config.max_events:
        return Verdict(
            INCONCLUSIVE, f"no difference shown within {config.max_events} events",
            n, a, b, review_rate_delta,
        )  # fmt: skip
    return Verdict(CONTINUE, "intervals still cover 0", n, a, b, review_rate_delta)
