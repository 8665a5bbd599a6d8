"""A window's before-labels report: the CBPE estimates of all and of auto-accepted
predictions, and, for the labeled ones, the estimate beside the realised accuracy."""

from __future__ import annotations

from dataclasses import dataclass

from shared.estimation.cbpe import DEFAULT_Z, Estimate, Realised, estimate, realised
from shared.windows.calibration import (
    ALL_PREDICTIONS,
    AUTO_PREDICTIONS,
    LABELED_AUTO,
    LABELED_PREDICTIONS,
    Totals,
)


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    window: str
    n_predictions: int
    estimated: Estimate | None
    """Expected accuracy of every prediction with a calibrated confidence, labeled or not."""
    estimated_auto: Estimate | None
    """Expected accuracy of the auto-accepted ones (1 − the selective risk the queue leaves)."""
    labeled: Realised | None
    """Estimate over the labeled predictions beside their realised accuracy."""
    labeled_auto: Realised | None


def report(totals: Totals, window: str, z: float = DEFAULT_Z) -> PerformanceReport:
    """The report of a window's summed counters (``WindowReader.totals``)."""
    all_sums, _ = totals.confidence_sums(ALL_PREDICTIONS)
    auto_sums, _ = totals.confidence_sums(AUTO_PREDICTIONS)
    lab_sums, lab_ok = totals.confidence_sums(LABELED_PREDICTIONS)
    la_sums, la_ok = totals.confidence_sums(LABELED_AUTO)
    return PerformanceReport(
        window,
        totals.get("n"),
        estimate(all_sums, z),
        estimate(auto_sums, z),
        realised(lab_sums, lab_ok, z),
        realised(la_sums, la_ok, z),
    )
