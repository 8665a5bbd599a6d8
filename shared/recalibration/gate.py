"""The validation gate and the retrain-or-recalibrate advice, on top-label confidences.

Every map yields a calibrated top-label confidence, so candidates and the current map are
compared on the same held-out rows with the same losses: top-label NLL (confidences
clipped to [1e-6, 1 − 1e-6]), top-label Brier, ECE (10 bins), and a paired bootstrap
interval on the mean per-event NLL difference (current − candidate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from shared.metrics.calibration import ece_from_arrays, reliability_bins_from_arrays
from shared.recalibration.data import BoolArray, FloatArray

CLIP = 1e-6


def nll_terms(conf: FloatArray, correct: BoolArray) -> FloatArray:
    c = np.clip(conf, CLIP, 1.0 - CLIP)
    out: FloatArray = -np.where(correct, np.log(c), np.log1p(-c))
    return out


@dataclass(frozen=True, slots=True)
class HeldOut:
    n: int
    nll: float
    brier: float
    ece: float
    bins: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def held_out_metrics(conf: FloatArray, correct: BoolArray, bins: int = 10) -> HeldOut:
    c = np.clip(np.nan_to_num(conf, nan=0.5), 0.0, 1.0)
    return HeldOut(
        n=int(c.size),
        nll=float(nll_terms(c, correct).mean()),
        brier=float(np.square(c - correct).mean()),
        ece=float(ece_from_arrays(c, correct, bins) or 0.0),
        bins=[
            {
                "lo": b.lo,
                "hi": b.hi,
                "confidence": b.confidence,
                "accuracy": b.accuracy,
                "count": b.count,
            }
            for b in reliability_bins_from_arrays(c, correct, bins)
        ],
    )


def paired_bootstrap(
    diff: FloatArray, seed: int, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diff`` over resamples of its rows."""
    rng = np.random.default_rng(seed)
    n = diff.size
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str
    interval: tuple[float, float] | None = None


def gate(
    before: FloatArray,
    after: FloatArray,
    correct: BoolArray,
    min_samples: int,
    seed: int,
    ece_tolerance: float = 1e-3,
    resamples: int = 1000,
) -> tuple[Verdict, HeldOut, HeldOut]:
    """Pass when the candidate (``after``) beats the current map on the held-out rows."""
    mb, ma = held_out_metrics(before, correct), held_out_metrics(after, correct)
    if correct.size < min_samples:
        return Verdict(False, f"{correct.size} held-out rows, need {min_samples}"), mb, ma
    if not np.isfinite(after).all():
        return Verdict(False, "candidate gives non-finite confidences"), mb, ma
    if not ma.nll < mb.nll:
        return Verdict(False, f"NLL not lower ({ma.nll:.5f} vs {mb.nll:.5f})"), mb, ma
    if not ma.brier < mb.brier:
        return Verdict(False, f"Brier not lower ({ma.brier:.5f} vs {mb.brier:.5f})"), mb, ma
    if ma.ece > mb.ece + ece_tolerance:
        return Verdict(False, f"ECE worse ({ma.ece:.4f} vs {mb.ece:.4f})"), mb, ma
    diff = nll_terms(np.nan_to_num(before, nan=0.5), correct) - nll_terms(after, correct)
    lo, hi = paired_bootstrap(diff, seed, resamples)
    if lo <= 0.0:
        return (
            Verdict(False, f"bootstrap interval of the NLL gain [{lo:.5f}, {hi:.5f}] holds 0"),
            mb,
            ma,
        )
    gain = mb.nll - ma.nll
    verdict = Verdict(True, f"NLL gain {gain:.5f}, 95% interval [{lo:.5f}, {hi:.5f}]", (lo, hi))
    return verdict, mb, ma


# --- retrain or recalibrate ----------------------------------------------------------------


def _auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley–McNeil standard error of an ROC AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / max(
        n_pos * n_neg, 1
    )
    return float(np.sqrt(max(var, 0.0)))


@dataclass(frozen=True, slots=True)
class Discrimination:
    n: int
    auc: float | None
    auc_se: float | None
    accuracy: float
    accuracy_at_coverage: float
    accuracy_at_coverage_se: float
    ece: float


def discrimination(conf: FloatArray, correct: BoolArray, coverage: float = 0.8) -> Discrimination:
    """Raw-score discrimination: AUC of confidence for correctness, accuracy at coverage."""
    n = int(conf.size)
    n_pos = int(correct.sum())
    auc = se = None
    if 0 < n_pos < n:
        auc = float(roc_auc_score(correct, conf))
        se = _auc_se(auc, n_pos, n - n_pos)
    k = max(1, int(np.ceil(coverage * n)))
    top = np.argsort(-conf, kind="stable")[:k]
    acc_cov = float(correct[top].mean())
    return Discrimination(
        n=n,
        auc=auc,
        auc_se=se,
        accuracy=float(correct.mean()),
        accuracy_at_coverage=acc_cov,
        accuracy_at_coverage_se=float(np.sqrt(acc_cov * (1 - acc_cov) / k)),
        ece=float(ece_from_arrays(np.clip(conf, 0, 1), correct) or 0.0),
    )


@dataclass(frozen=True, slots=True)
class Advice:
    advice: str  # recalibrate | retrain | healthy
    reason: str
    reference: Discrimination
    current: Discrimination

    def to_json(self) -> dict[str, Any]:
        return {
            "advice": self.advice,
            "reason": self.reason,
            "reference": asdict(self.reference),
            "current": asdict(self.current),
        }


def advise(
    reference: Discrimination,
    current: Discrimination,
    ece_slo: float,
    z: float = 1.96,
    min_drop: float = 0.1,
) -> Advice:
    """``retrain`` when discrimination fell beyond its sampling error (and ``min_drop``):
    the AUC of raw confidence for correctness, or accuracy at coverage where no AUC exists;
    (that AUC also falls a little when only calibration drifts: 0.73 → 0.67 when accuracy
    falls by 0.2 at every confidence, hence a material ``min_drop``);
    else ``recalibrate`` when ECE is above the SLO and above the reference's; else
    ``healthy``."""
    drops = []
    if reference.auc is not None and current.auc is not None:
        err = z * float(np.hypot(reference.auc_se or 0.0, current.auc_se or 0.0))
        drop = reference.auc - current.auc
        if drop > max(err, min_drop):
            drops.append(f"AUC {reference.auc:.3f} → {current.auc:.3f} (± {err:.3f})")
    err = z * float(np.hypot(reference.accuracy_at_coverage_se, current.accuracy_at_coverage_se))
    drop = reference.accuracy_at_coverage - current.accuracy_at_coverage
    if (reference.auc is None or current.auc is None) and drop > max(err, min_drop):
        drops.append(
            f"accuracy at coverage {reference.accuracy_at_coverage:.3f} → "
            f"{current.accuracy_at_coverage:.3f} (± {err:.3f})"
        )
    if drops:
        return Advice("retrain", "discrimination fell: " + "; ".join(drops), reference, current)
    if current.ece > ece_slo and current.ece > reference.ece:
        return Advice(
            "recalibrate",
            f"ECE {reference.ece:.3f} → {current.ece:.3f} with discrimination stable",
            reference,
            current,
        )
    return Advice("healthy", "discrimination and calibration stable", reference, current)
