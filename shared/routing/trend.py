"""Trend of a path: its recent 24 h against its 7–30-day baseline, by a two-proportion test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scipy.special import ndtr

from shared.routing.model import two_proportion_z

Trend = Literal["improving", "stable", "degrading", "insufficient"]
MIN_SIDE = 20
"""Outcomes each side needs before a trend is called."""
ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class TrendResult:
    trend: Trend
    recent_rate: float | None
    baseline_rate: float | None
    z: float
    p_value: float | None


def trend(
    recent_s: float, recent_n: float, base_s: float, base_n: float, alpha: float = ALPHA
) -> TrendResult:
    """Two-sided two-proportion z-test of recent against baseline success rates."""
    recent = recent_s / recent_n if recent_n > 0 else None
    base = base_s / base_n if base_n > 0 else None
    if recent_n < MIN_SIDE or base_n < MIN_SIDE:
        return TrendResult("insufficient", recent, base, 0.0, None)
    z = two_proportion_z(recent_s, recent_n, base_s, base_n)
    p = float(2 * (1 - ndtr(abs(z))))
    if p >= alpha:
        return TrendResult("stable", recent, base, z, p)
    return TrendResult("improving" if z > 0 else "degrading", recent, base, z, p)
