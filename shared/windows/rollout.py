"""Paired statistics of a calibrator under rollout: the aggregator writes, others read.

While a candidate calibrator runs beside a model version's active map (shadow or canary,
``shared.recalibration.serving``), the aggregator keeps one Redis hash per
(model version, candidate version), of sufficient statistics only, so its size does not
grow with traffic (at most about 740 integer fields, 44 KB measured, whatever the count):

``{prefix}agg:rollout:{M}:{candidate version}`` (``{M}`` the model version key as a hash
tag: the slot of the model version's other state; TTL ``ROLLOUT_TTL_S``, renewed on
every write). Fields, integers; sums in fixed point (``SCALE`` = 1e9):

- at decision time, per event with a candidate beside it: ``n`` events, ``ra``/``rc``
  reviews the active / candidate map would take, ``nk`` canary events, ``rk``/``rt``
  reviews taken in the canary / control arm;
- at label time, per labeled event: ``L`` paired events; ``Dn``/``Qn`` Σd and Σd² of
  d = NLL(active) − NLL(candidate) (top-label, confidences clipped to [1e-6, 1 − 1e-6]);
  ``Db``/``Qb`` the same of the Brier difference;
- per map ``m`` in ``a`` (active), ``c`` (candidate): reliability over 10 bins
  ``{m}c{i}``, ``{m}s{i}``, ``{m}k{i}`` (count, Σ confidence, correct), ``{m}B``/``{m}N``
  (Σ Brier, Σ NLL) and a 100-bin risk–coverage histogram ``{m}h{j}``, ``{m}e{j}``,
  ``{m}f{j}`` (count, errors, Σ confidence) for AURC;
- per arm ``K`` (canary) and ``T`` (control), the deciding map's reliability
  ``{arm}c{i}``, ``{arm}s{i}``, ``{arm}k{i}``.

The writes go through the aggregator's offset fence with the rest of its batch, so a replay
counts nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.contracts.batches import BoolArray, FloatArray
from shared.metrics.calibration import (
    ReliabilityBin,
    ReliabilityStats,
    accuracy,
    brier,
    ece,
    reliability_bins,
)
from shared.metrics.selective import ConfidenceHistogram
from shared.recalibration.sequential import PairedSums
from shared.runtime.redis_client import tagged

SCALE = 1_000_000_000
BINS = 10
HISTOGRAM_BINS = 100
ROLLOUT_TTL_S = 30 * 86_400
CLIP = 1e-6
MAPS = ("a", "c")
ARMS = ("K", "T")

Fields = dict[str, int]


def rollout_key(redis_prefix: str, model: str, candidate: str) -> str:
    return f"{redis_prefix}agg:rollout:{tagged(model)}:{candidate}"


def _fx(x: float) -> int:
    return round(x * SCALE)


def _add(out: Fields, field: str, value: int) -> None:
    if value:
        out[field] = out.get(field, 0) + value


def decision_fields(
    active_review: BoolArray, candidate_review: BoolArray, canary: BoolArray, review: BoolArray
) -> Fields:
    """Counts of one batch's decisions with a candidate beside the active map."""
    out: Fields = {}
    _add(out, "n", int(active_review.size))
    _add(out, "ra", int(active_review.sum()))
    _add(out, "rc", int(candidate_review.sum()))
    _add(out, "nk", int(canary.sum()))
    _add(out, "rk", int((review & canary).sum()))
    _add(out, "rt", int((review & ~canary).sum()))
    return out


def _nll_terms(conf: FloatArray, correct: BoolArray) -> FloatArray:
    c = np.clip(conf, CLIP, 1.0 - CLIP)
    out: FloatArray = -np.where(correct, np.log(c), np.log1p(-c))
    return out


def _reliability(out: Fields, prefix: str, conf: FloatArray, correct: BoolArray) -> None:
    if not conf.size:
        return
    s = ReliabilityStats.from_arrays(conf, correct, BINS)
    for i in range(BINS):
        _add(out, f"{prefix}c{i}", int(s.count[i]))
        _add(out, f"{prefix}s{i}", _fx(float(s.conf_sum[i])))
        _add(out, f"{prefix}k{i}", int(s.correct_sum[i]))


def label_fields(
    active: FloatArray, candidate: FloatArray, correct: BoolArray, canary: BoolArray
) -> Fields:
    """Sums of one batch of labeled events both maps ran on (NaN confidences are skipped)."""
    ok = np.isfinite(active) & np.isfinite(candidate)
    a = np.clip(active[ok], 0.0, 1.0)
    c = np.clip(candidate[ok], 0.0, 1.0)
    y = correct[ok].astype(np.bool_)
    k = canary[ok].astype(np.bool_)
    out: Fields = {}
    if not a.size:
        return out
    na, nc = _nll_terms(a, y), _nll_terms(c, y)
    ba, bc = np.square(a - y), np.square(c - y)
    dn, db = na - nc, ba - bc
    _add(out, "L", int(a.size))
    _add(out, "Dn", _fx(float(dn.sum())))
    _add(out, "Qn", _fx(float(np.square(dn).sum())))
    _add(out, "Db", _fx(float(db.sum())))
    _add(out, "Qb", _fx(float(np.square(db).sum())))
    for m, conf, nl, br in (("a", a, na, ba), ("c", c, nc, bc)):
        _reliability(out, m, conf, y)
        _add(out, f"{m}B", _fx(float(br.sum())))
        _add(out, f"{m}N", _fx(float(nl.sum())))
        h = ConfidenceHistogram.from_arrays(conf, y, HISTOGRAM_BINS)
        for j in np.flatnonzero(h.count).tolist():
            _add(out, f"{m}h{j}", int(h.count[j]))
            _add(out, f"{m}e{j}", int(h.errors[j]))
            _add(out, f"{m}f{j}", _fx(float(h.conf_sum[j])))
    deciding = np.where(k, c, a)
    _reliability(out, "K", deciding[k], y[k])
    _reliability(out, "T", deciding[~k], y[~k])
    return out


@dataclass(frozen=True, slots=True)
class MapStats:
    """One map's metrics on the paired labeled events."""

    n: int
    ece: float | None
    brier: float | None
    nll: float | None
    accuracy: float | None
    aurc: float | None
    review_rate: float | None
    bins: list[ReliabilityBin]


@dataclass(frozen=True, slots=True)
class ArmStats:
    events: int
    reviews: int
    labeled: int
    ece: float | None
    bins: list[ReliabilityBin]


@dataclass(frozen=True, slots=True)
class RolloutStats:
    events: int
    labeled: int
    nll_diff: PairedSums
    brier_diff: PairedSums
    active: MapStats
    candidate: MapStats
    canary: ArmStats
    control: ArmStats

    @property
    def review_rate_delta(self) -> float | None:
        a, c = self.active.review_rate, self.candidate.review_rate
        return None if a is None or c is None else c - a


class _Totals:
    def __init__(self, raw: dict[Any, Any]) -> None:
        self.c = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    def get(self, f: str) -> int:
        return self.c.get(f, 0)

    def fx(self, f: str) -> float:
        return self.get(f) / SCALE

    def reliability(self, prefix: str, brier_sum: float = 0.0) -> ReliabilityStats:
        return ReliabilityStats(
            np.array([self.get(f"{prefix}c{i}") for i in range(BINS)], dtype=np.int64),
            np.array([self.fx(f"{prefix}s{i}") for i in range(BINS)]),
            np.array([self.get(f"{prefix}k{i}") for i in range(BINS)], dtype=np.int64),
            brier_sum,
        )

    def map_stats(self, m: str, reviews: int) -> MapStats:
        rel = self.reliability(m, self.fx(f"{m}B"))
        cells = HISTOGRAM_BINS + 1
        h = ConfidenceHistogram(
            np.array([self.get(f"{m}h{j}") for j in range(cells)], dtype=np.int64),
            np.array([self.get(f"{m}e{j}") for j in range(cells)], dtype=np.int64),
            np.array([self.fx(f"{m}f{j}") for j in range(cells)]),
        )
        n, events = rel.n, self.get("n")
        return MapStats(
            n=n,
            ece=ece(rel),
            brier=brier(rel),
            nll=self.fx(f"{m}N") / n if n else None,
            accuracy=accuracy(rel),
            aurc=h.curve().aurc if h.n else None,
            review_rate=reviews / events if events else None,
            bins=reliability_bins(rel),
        )

    def arm(self, prefix: str, events: int, reviews: int) -> ArmStats:
        rel = self.reliability(prefix)
        return ArmStats(events, reviews, rel.n, ece(rel), reliability_bins(rel))


def rollout_stats(raw: dict[Any, Any]) -> RolloutStats:
    """The metrics of one rollout hash (``HGETALL`` answer); an empty hash gives zeros."""
    t = _Totals(raw)
    n = t.get("L")
    return RolloutStats(
        events=t.get("n"),
        labeled=n,
        nll_diff=PairedSums(n, t.fx("Dn"), t.fx("Qn")),
        brier_diff=PairedSums(n, t.fx("Db"), t.fx("Qb")),
        active=t.map_stats("a", t.get("ra")),
        candidate=t.map_stats("c", t.get("rc")),
        canary=t.arm("K", t.get("nk"), t.get("rk")),
        control=t.arm("T", t.get("n") - t.get("nk"), t.get("rt")),
    )


async def read_rollout(
    client: aioredis.Redis, redis_prefix: str, model: str, candidate: str
) -> RolloutStats:
    return rollout_stats(await client.hgetall(rollout_key(redis_prefix, model, candidate)))
