"""Pure computation of bucket counter increments from predictions and their labels."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.metrics.calibration import bin_index, brier_terms, nll_terms
from shared.windows.calibration import (
    ALL_PREDICTIONS,
    AUTO_PREDICTIONS,
    CALIBRATED_BINS,
    CALIBRATED_COUNT,
    CALIBRATED_ERRORS,
    DELAY_BUCKETS_S,
    FINE_BINS,
    GRANULARITY,
    LABELED_AUTO,
    LABELED_PREDICTIONS,
    RELIABILITY_BINS,
    SCALE,
    SumFields,
)

MAX_CLASSES = 50
"""Classes tracked per model for classwise ECE; beyond this the classwise counters stop."""

BucketKey = tuple[str, str, int]
"""(granularity, model key, bucket start in epoch seconds)."""
Increments = dict[BucketKey, dict[str, int]]


@dataclass(slots=True)
class LabeledEvents:
    """Predictions of one model version whose ground truth is now known."""

    model: str
    event_ms: npt.NDArray[np.int64]
    confidences: npt.NDArray[np.float64]
    correct: npt.NDArray[np.bool_]
    delay_s: npt.NDArray[np.float64]
    probabilities: npt.NDArray[np.float64] | None = None
    classes: list[str] | None = None
    true_index: npt.NDArray[np.int64] | None = None
    """Column of the true class in ``probabilities`` (−1 when the class is not a column)."""
    calibrated: npt.NDArray[np.float64] | None = None
    """Calibrated confidence the policy decided on (NaN where unknown: an older record)."""
    auto: npt.NDArray[np.bool_] | None = None
    """Whether the prediction was auto-accepted (not withheld for review)."""


_BIN_SPAN = 1 << 20
"""Bucket start × span + bin index: one sortable int64 per (bucket, bin) pair."""


def _add_binned(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    prefix: str,
    bins: npt.NDArray[np.int64],
    values: npt.NDArray[np.int64],
    suffix: str = "",
) -> None:
    """Add per-event integer ``values`` into field ``{prefix}{bin}{suffix}`` of each event's
    bucket, for every granularity: one sort per granularity, exact int64 sums."""
    if not len(event_ms):
        return
    seconds = np.asarray(event_ms, dtype=np.int64) // 1000
    vals = np.asarray(values, dtype=np.int64)
    for g, size in GRANULARITY.items():
        combined = (seconds // size * size) * _BIN_SPAN + bins
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        edges = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        sums = np.add.reduceat(vals[order], edges)
        for code, total in zip(ordered[edges].tolist(), sums.tolist(), strict=True):
            if total:
                start, b = divmod(code, _BIN_SPAN)
                bucket = out[(g, model, start)]
                field = f"{prefix}{b}{suffix}"
                bucket[field] = bucket.get(field, 0) + total


def _add_binned_many(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    bins: npt.NDArray[np.int64],
    fields: dict[str, npt.NDArray[np.int64]],
) -> None:
    """:func:`_add_binned` of several prefixes over the same bins: one sort per granularity."""
    if not len(event_ms):
        return
    seconds = np.asarray(event_ms, dtype=np.int64) // 1000
    for g, size in GRANULARITY.items():
        combined = (seconds // size * size) * _BIN_SPAN + bins
        order = np.argsort(combined, kind="stable")
        ordered = combined[order]
        edges = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        codes = [divmod(c, _BIN_SPAN) for c in ordered[edges].tolist()]
        for prefix, values in fields.items():
            sums = np.add.reduceat(np.asarray(values, dtype=np.int64)[order], edges)
            for (start, b), total in zip(codes, sums.tolist(), strict=True):
                if total:
                    bucket = out[(g, model, start)]
                    field = f"{prefix}{b}"
                    bucket[field] = bucket.get(field, 0) + total


def _add(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    field: str,
    values: npt.NDArray[np.int64],
) -> None:
    """Add per-event integer ``values`` into ``field`` of each event's bucket, per granularity."""
    for g, size in GRANULARITY.items():
        seconds = np.asarray(event_ms, dtype=np.int64) // 1000 // size * size
        uniq, inverse = np.unique(seconds, return_inverse=True)
        sums = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(sums, inverse, values)  # exact integer sums (fixed point)
        for start, total in zip(uniq.tolist(), sums.tolist(), strict=True):
            if total:
                bucket = out[(g, model, start)]
                bucket[field] = bucket.get(field, 0) + total


def _add_many(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    fields: dict[str, npt.NDArray[np.int64]],
) -> None:
    """:func:`_add` of several fields at once: one grouping per granularity for all."""
    if not len(event_ms):
        return
    seconds = np.asarray(event_ms, dtype=np.int64) // 1000
    for g, size in GRANULARITY.items():
        uniq, inverse = np.unique(seconds // size * size, return_inverse=True)
        starts = uniq.tolist()
        for field, values in fields.items():
            sums = np.bincount(inverse, weights=values, minlength=len(uniq))
            for start, total in zip(starts, sums.tolist(), strict=True):
                if total:
                    bucket = out[(g, model, start)]
                    bucket[field] = bucket.get(field, 0) + int(total)


def _sum_fields(
    fields: SumFields,
    c: npt.NDArray[np.float64],
    member: npt.NDArray[np.bool_],
    correct: npt.NDArray[np.bool_] | None = None,
) -> dict[str, npt.NDArray[np.int64]]:
    """Per-event values of one set's CBPE sums (zero outside the set)."""
    m = member.astype(np.int64)
    out = {
        fields.n: m,
        fields.conf: np.where(member, fixed(c), 0),
        fields.var: np.where(member, fixed(c * (1.0 - c)), 0),
    }
    if fields.correct is not None and correct is not None:
        out[fields.correct] = (member & correct).astype(np.int64)
    return out


def estimate_increments(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    calibrated: npt.NDArray[np.float64],
    review: npt.NDArray[np.bool_],
) -> None:
    """CBPE sums of a batch of decisions, labeled or not: all and auto-accepted predictions
    with a calibrated confidence (a NaN, withheld by the policy, counts in neither)."""
    known = np.isfinite(calibrated)
    c = np.where(known, calibrated, 0.0)
    _add_many(
        out,
        model,
        event_ms,
        _sum_fields(ALL_PREDICTIONS, c, known) | _sum_fields(AUTO_PREDICTIONS, c, known & ~review),
    )


def _labeled_estimate_increments(out: Increments, ev: LabeledEvents) -> None:
    """Labeled predictions' CBPE sums and correct counts, and their fine histogram on
    calibrated confidence (the threshold advice's input)."""
    if ev.calibrated is None:
        return
    known = np.isfinite(ev.calibrated)
    if not known.any():
        return
    c = np.where(known, ev.calibrated, 0.0)
    auto = known & (ev.auto if ev.auto is not None else np.zeros(len(c), dtype=np.bool_))
    _add_many(
        out,
        ev.model,
        ev.event_ms,
        _sum_fields(LABELED_PREDICTIONS, c, known, ev.correct)
        | _sum_fields(LABELED_AUTO, c, auto, ev.correct),
    )
    ms, ck, ok = ev.event_ms[known], np.clip(c[known], 0.0, 1.0), ev.correct[known]
    fine = bin_index(ck, CALIBRATED_BINS + 1, scale=CALIBRATED_BINS)
    _add_binned_many(
        out,
        ev.model,
        ms,
        fine,
        {
            CALIBRATED_COUNT: np.ones(len(ms), dtype=np.int64),
            CALIBRATED_ERRORS: (~ok).astype(np.int64),
        },
    )


def fixed(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.round(np.asarray(x) * SCALE).astype(np.int64)


def decision_increments(
    out: Increments, model: str, event_ms: npt.NDArray[np.int64], review: npt.NDArray[np.bool_]
) -> None:
    ones = np.ones(len(event_ms), dtype=np.int64)
    _add(out, model, event_ms, "n", ones)
    _add(out, model, event_ms, "rv", review.astype(np.int64))


def labeled_increments(out: Increments, ev: LabeledEvents, estimate: bool = True) -> None:
    n = len(ev.event_ms)
    if n == 0:
        return
    if estimate:
        _labeled_estimate_increments(out, ev)
    ones = np.ones(n, dtype=np.int64)
    ok = ev.correct.astype(np.int64)
    conf_fp = fixed(ev.confidences)
    _add(out, ev.model, ev.event_ms, "L", ones)
    rel = bin_index(ev.confidences, RELIABILITY_BINS)
    _add_binned(out, ev.model, ev.event_ms, "c", rel, ones)
    _add_binned(out, ev.model, ev.event_ms, "k", rel, ok)
    _add_binned(out, ev.model, ev.event_ms, "s", rel, conf_fp)
    fine = bin_index(ev.confidences, FINE_BINS + 1, scale=FINE_BINS)
    _add_binned(out, ev.model, ev.event_ms, "h", fine, ones)
    _add_binned(out, ev.model, ev.event_ms, "e", fine, 1 - ok)
    delay = np.searchsorted(np.asarray(DELAY_BUCKETS_S), ev.delay_s, side="left")
    _add_binned(out, ev.model, ev.event_ms, "dl", delay.astype(np.int64), ones)
    has_probs = (
        ev.probabilities is not None and ev.true_index is not None and ev.classes is not None
    )
    if has_probs:
        assert ev.probabilities is not None and ev.true_index is not None and ev.classes is not None
        usable = (ev.true_index >= 0) & ~np.isnan(ev.probabilities).any(axis=1)
        p, t, ms = ev.probabilities[usable], ev.true_index[usable], ev.event_ms[usable]
        # Brier in probability form where the vector is known, top-label form elsewhere.
        brier = np.where(usable, 0.0, (ev.confidences - ev.correct) ** 2)
        brier[usable] = brier_terms(p, t)
        _add(out, ev.model, ev.event_ms, "B", fixed(brier))
        if len(p):
            _add(out, ev.model, ms, "N", fixed(nll_terms(p, t)))
            _add(out, ev.model, ms, "Nn", np.ones(len(p), dtype=np.int64))
            for c, name in enumerate(ev.classes[:MAX_CLASSES]):
                pc = p[:, c]
                bins = bin_index(pc, RELIABILITY_BINS)
                hit = (t == c).astype(np.int64)
                _add_binned(
                    out, ev.model, ms, "C", bins, np.ones(len(pc), dtype=np.int64), f"|{name}"
                )
                _add_binned(out, ev.model, ms, "P", bins, fixed(pc), f"|{name}")
                _add_binned(out, ev.model, ms, "H", bins, hit, f"|{name}")
    else:
        _add(out, ev.model, ev.event_ms, "B", fixed((ev.confidences - ev.correct) ** 2))


def new_increments() -> Increments:
    return defaultdict(dict)
