"""Pure computation of bucket counter increments from predictions and their labels."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

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


_FINEST = min(GRANULARITY.values())
assert all(size % _FINEST == 0 for size in GRANULARITY.values()), "buckets must nest"


_Family = tuple[str, str, int, npt.NDArray[np.int64] | None, npt.NDArray[Any]]
"""(prefix, suffix, width (0: a single field), bins, values)."""


class FieldSums:
    """Per-event integer values of many fields of one model version's events, summed into
    each event's bucket of every granularity.

    A family is one field (``add``) or one field per bin (``add_binned``: field
    ``{prefix}{bin}{suffix}``). :meth:`into` groups every family's (finest bucket, field)
    pairs in one sort and rolls the finest buckets up into the coarser ones (they nest), so
    its cost is a dozen array operations whatever the number of fields, not a dozen per
    field and granularity: at moderate rates a batch holds a few events per model version
    and the per-call cost of numpy was most of the aggregator's time. Sums are exact
    (int64); a field whose sum in a finest bucket is zero is not written there (every caller
    adds values that are not negative, so its coarser sums are zero too)."""

    __slots__ = ("_families", "_model", "_seconds")

    def __init__(self, model: str, event_ms: npt.NDArray[np.int64]) -> None:
        self._model = model
        self._seconds = np.asarray(event_ms, dtype=np.int64) // 1000
        self._families: list[_Family] = []

    def add(self, field: str, values: npt.ArrayLike) -> None:
        """``values`` (one per event) into ``field``."""
        self._families.append((field, "", 0, None, np.asarray(values)))

    def add_binned(
        self,
        prefix: str,
        bins: npt.NDArray[np.int64],
        values: npt.ArrayLike,
        width: int,
        suffix: str = "",
    ) -> None:
        """``values`` into field ``{prefix}{bin}{suffix}`` of each event's bin (``0 <= bin <
        width``)."""
        self._families.append(
            (prefix, suffix, width, np.asarray(bins, dtype=np.int64), np.asarray(values))
        )

    def into(self, out: Increments) -> None:
        n = len(self._seconds)
        if not n or not self._families:
            return
        finest, slot = np.unique(self._seconds // _FINEST * _FINEST, return_inverse=True)
        widths = [max(width, 1) for _, _, width, _, _ in self._families]
        offsets = np.concatenate(([0], np.cumsum(widths)))
        span = int(offsets[-1])
        base = slot.astype(np.int64) * span
        binned = [(b, w) for _, _, w, b, _ in self._families if b is not None]
        if binned:
            every = np.concatenate([b for b, _ in binned])
            limit = np.repeat([w for _, w in binned], n)
            if ((every < 0) | (every >= limit)).any():
                raise ValueError("a bin outside its family's width")
        codes = np.concatenate(
            [
                base + int(offsets[f]) + (0 if bins is None else bins)
                for f, (_, _, _, bins, _) in enumerate(self._families)
            ]
        )
        values = np.concatenate(
            [np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for *_, v in self._families]
        )
        keys, sums = _grouped_sums(codes, values, len(finest) * span)
        slots, rest = np.divmod(keys, span)
        family = np.searchsorted(offsets, rest, side="right") - 1
        bins = rest - offsets[family]
        families = self._families
        names = [
            f"{families[f][0]}{b}{families[f][1]}" if families[f][2] else families[f][0]
            for f, b in zip(family.tolist(), bins.tolist(), strict=True)
        ]
        totals = sums.tolist()
        by_start: dict[int, dict[str, int]] = {}
        if len(finest) == 1:  # the usual case: every event in one finest bucket
            by_start[int(finest[0])] = dict(zip(names, totals, strict=True))
        else:
            for start, name, total in zip(finest[slots].tolist(), names, totals, strict=True):
                by_start.setdefault(start, {})[name] = total
        for start, fields in by_start.items():
            for g, size in GRANULARITY.items():
                bucket = out[(g, self._model, start // size * size)]
                if not bucket:
                    bucket.update(fields)
                    continue
                for name, total in fields.items():
                    bucket[name] = bucket.get(name, 0) + total


_DENSE_CELLS = 1 << 20
"""Largest count of (bucket, field) cells summed in a dense array rather than by sorting."""
_EXACT = 1 << 53
"""float64 adds integers exactly while every partial sum stays below this."""


def _grouped_sums(
    codes: npt.NDArray[np.int64], values: npt.NDArray[np.int64], cells: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The codes (each ``0 <= code < cells``) whose values sum to something other than 0, in
    increasing order, and those sums, exact. A dense ``bincount`` (linear) when the cells are
    few and float64 sums are exact for these values; otherwise one sort."""
    if cells <= _DENSE_CELLS and int(np.abs(values).max(initial=0)) * len(values) < _EXACT:
        dense = np.bincount(codes, weights=values, minlength=cells)
        keys = np.flatnonzero(dense)
        return keys, dense[keys].astype(np.int64)
    order = np.argsort(codes)
    ordered = codes[order]
    edges = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sums = np.add.reduceat(values[order], edges)
    written = sums != 0
    return ordered[edges][written], sums[written]


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
    sums: FieldSums | None = None,
) -> None:
    """CBPE sums of a batch of decisions, labeled or not: all and auto-accepted predictions
    with a calibrated confidence (a NaN, withheld by the policy, counts in neither). With
    ``sums`` (of the same events), the fields go there and ``out`` is left to its caller."""
    known = np.isfinite(calibrated)
    c = np.where(known, calibrated, 0.0)
    acc = FieldSums(model, event_ms) if sums is None else sums
    fields = _sum_fields(ALL_PREDICTIONS, c, known) | _sum_fields(
        AUTO_PREDICTIONS, c, known & ~review
    )
    for name, values in fields.items():
        acc.add(name, values)
    if sums is None:
        acc.into(out)


def _labeled_estimate_increments(acc: FieldSums, ev: LabeledEvents) -> None:
    """Labeled predictions' CBPE sums and correct counts, and their fine histogram on
    calibrated confidence (the threshold advice's input)."""
    if ev.calibrated is None:
        return
    known = np.isfinite(ev.calibrated)
    if not known.any():
        return
    c = np.where(known, ev.calibrated, 0.0)
    auto = known & (ev.auto if ev.auto is not None else np.zeros(len(c), dtype=np.bool_))
    fields = _sum_fields(LABELED_PREDICTIONS, c, known, ev.correct) | _sum_fields(
        LABELED_AUTO, c, auto, ev.correct
    )
    for name, values in fields.items():
        acc.add(name, values)
    # Events without a calibrated confidence add zeros (in bin 0): nothing is written for them.
    fine = bin_index(np.clip(c, 0.0, 1.0), CALIBRATED_BINS + 1, scale=CALIBRATED_BINS)
    acc.add_binned(CALIBRATED_COUNT, fine, known.astype(np.int64), CALIBRATED_BINS + 1)
    acc.add_binned(
        CALIBRATED_ERRORS, fine, (known & ~ev.correct).astype(np.int64), CALIBRATED_BINS + 1
    )


def fixed(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.round(np.asarray(x) * SCALE).astype(np.int64)


def decision_increments(
    out: Increments,
    model: str,
    event_ms: npt.NDArray[np.int64],
    review: npt.NDArray[np.bool_],
    sums: FieldSums | None = None,
) -> None:
    acc = FieldSums(model, event_ms) if sums is None else sums
    acc.add("n", np.ones(len(event_ms), dtype=np.int64))
    acc.add("rv", review.astype(np.int64))
    if sums is None:
        acc.into(out)


def labeled_increments(out: Increments, ev: LabeledEvents, estimate: bool = True) -> None:
    n = len(ev.event_ms)
    if n == 0:
        return
    acc = FieldSums(ev.model, ev.event_ms)
    if estimate:
        _labeled_estimate_increments(acc, ev)
    ones = np.ones(n, dtype=np.int64)
    ok = ev.correct.astype(np.int64)
    acc.add("L", ones)
    rel = bin_index(ev.confidences, RELIABILITY_BINS)
    acc.add_binned("c", rel, ones, RELIABILITY_BINS)
    acc.add_binned("k", rel, ok, RELIABILITY_BINS)
    acc.add_binned("s", rel, fixed(ev.confidences), RELIABILITY_BINS)
    fine = bin_index(ev.confidences, FINE_BINS + 1, scale=FINE_BINS)
    acc.add_binned("h", fine, ones, FINE_BINS + 1)
    acc.add_binned("e", fine, 1 - ok, FINE_BINS + 1)
    delay = np.searchsorted(np.asarray(DELAY_BUCKETS_S), ev.delay_s, side="left")
    acc.add_binned("dl", delay.astype(np.int64), ones, len(DELAY_BUCKETS_S) + 1)
    has_probs = (
        ev.probabilities is not None and ev.true_index is not None and ev.classes is not None
    )
    if has_probs:
        assert ev.probabilities is not None and ev.true_index is not None and ev.classes is not None
        usable = (ev.true_index >= 0) & ~np.isnan(ev.probabilities).any(axis=1)
        # Brier in probability form where the vector is known, top-label form elsewhere.
        brier = np.where(usable, 0.0, (ev.confidences - ev.correct) ** 2)
        brier[usable] = brier_terms(ev.probabilities[usable], ev.true_index[usable])
        acc.add("B", fixed(brier))
        if usable.any():
            # Rows without a usable vector add zeros: nothing is written for them.
            p = np.where(usable[:, None], ev.probabilities, 0.0)
            t = np.where(usable, ev.true_index, -1)
            nll = np.zeros(n)
            nll[usable] = nll_terms(p[usable], t[usable])
            acc.add("N", fixed(nll))
            use = usable.astype(np.int64)
            acc.add("Nn", use)
            for c, name in enumerate(ev.classes[:MAX_CLASSES]):
                pc = p[:, c]
                bins = bin_index(pc, RELIABILITY_BINS)
                suffix = f"|{name}"
                acc.add_binned("C", bins, use, RELIABILITY_BINS, suffix)
                acc.add_binned("P", bins, fixed(pc), RELIABILITY_BINS, suffix)
                acc.add_binned("H", bins, (t == c).astype(np.int64), RELIABILITY_BINS, suffix)
    else:
        acc.add("B", fixed((ev.confidences - ev.correct) ** 2))
    acc.into(out)


def new_increments() -> Increments:
    return defaultdict(dict)
