"""Calibration state in Redis: sufficient statistics per model version and time bucket.

The aggregator is the only writer; the gateway reads. Layout (``P`` = ``<redis_prefix>agg:``,
``{M}`` = the model version key ``tenant/model/version`` as a hash tag, so that every key of
one model version lives in one Redis Cluster slot; ``KEY_LAYOUT`` in
``shared.runtime.identity`` names this layout):

- ``P{g}:{M}:{start}`` — a hash of integer counters for the bucket of granularity
  ``g`` (``m`` minute, ``h`` hour, ``d`` day) starting at epoch-second ``start``, keyed by
  the PREDICTION's event time. Fields: ``n`` predictions, ``rv`` withheld for review,
  ``L`` labeled, ``c{i}``/``k{i}``/``s{i}`` count, correct and confidence sum of reliability
  bin i, ``B`` Brier sum, ``N``/``Nn`` NLL sum and count, ``C{i}|{class}``/``P{i}|{class}``/
  ``H{i}|{class}`` one-vs-rest bins per class, ``dl{k}`` label-delay histogram.
- ``P{g}f:{M}:{start}`` — the same bucket's fine histogram for risk–coverage:
  ``h{j}``/``e{j}`` count and errors of fine cell j (sparse; the curve needs nothing else;
  ``f{j}``, a confidence sum, is read where an older aggregator wrote it). Kept apart so a
  calibration answer never reads its thousands of fields.
- ``P{g}q:{M}:{start}`` — a histogram of labeled predictions binned on their
  CALIBRATED confidence (the one the policy compares with its threshold), in
  ``CALIBRATED_BINS`` = 100 cells of 0.01 plus one for 1.0: ``h{j}``/``e{j}`` as above. The
  threshold advice reads it (``shared.estimation.risk_threshold``, whose candidate
  thresholds are that grid); 100 cells rather than 1,000 keep its writes a tenth.
- Estimation sums in the main hash (``ESTIMATE_FIELDS``; CBPE, ``shared.estimation.cbpe``):
  over predictions with a calibrated confidence c, ``En`` count, ``Ec`` Σc, ``Ev`` Σc(1−c);
  the same over auto-accepted ones ``Ean``/``Eac``/``Eav``; over labeled ones (counted when
  the label joins) ``Ln``/``Lc``/``Lv`` and ``Lk`` correct, auto-accepted labeled
  ``Lan``/``Lac``/``Lav``/``Lak``.
  Sums are fixed point, integer units of 1e-9, so merges and replays are exact.
- ``Pidx:{M}`` — sorted set of the minute buckets that exist (for time series).
- ``Pmodels`` — set of model keys seen (no tag: written before the fenced calls).
- ``Ppred:{~jS}:{tenant}/{event id}`` — what a later label needs of an unlabeled prediction
  (TTL = label horizon); ``Ppending:{~jS}:{tenant}/{event id}`` — a label that came before
  its prediction. ``S`` is the join shard of ``tenant/event id``
  (``shared.runtime.redis_client.shard_tag``, ``JOIN_SHARDS`` of them).
- ``Punlabeled-slots:{M}`` — hash: arrival slot start → predictions stored in it
  still unlabeled (``labels_pending``); slots whose join records have expired are dropped.
- ``Palert:{M}:{metric}``, ``Palert:baseline:{M}``, ``Palert:estimate-reference:{M}``,
  ``Palert:history:{M}`` — the evaluator's alert state (:func:`alert_key`).
- ``Poffsets`` — last applied offset per topic:partition (effectively-once), with
  ``Poffsets:inflight`` and one fence per tag ``Poffsets:{M}`` / ``Poffsets:{~jS}``
  (``shared.runtime.offset_fence``).

A window is summed inside Redis (one Lua call, exact integer sums) from at most a few
dozen hashes: the 7-day window takes whole days from the day buckets and only its ragged
ends from the hour buckets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis

from shared.estimation.cbpe import ConfidenceSums
from shared.metrics.calibration import (
    ReliabilityBin,
    ReliabilityStats,
    accuracy,
    brier,
    ece,
    mce,
    nll,
    reliability_bins,
)
from shared.metrics.selective import ConfidenceHistogram, RiskCoverage
from shared.runtime.redis_client import shard_tag, tagged
from shared.windows.names import ALL_TIME, WINDOW_SECONDS

SCALE = 1_000_000_000
"""Fixed-point unit of sums: 1e-9."""
RELIABILITY_BINS = 10
FINE_BINS = 1000
CALIBRATED_BINS = 100
DELAY_BUCKETS_S = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
GRANULARITY = {"m": 60, "h": 3600, "d": 86400}
RETENTION_S = {"m": 3 * 3600, "h": 15 * 86400, "d": 400 * 86400}
ALL_TIME_DAYS = 400
WINDOWS = {
    **{
        name: ("m", seconds // 60) if seconds < 86400 else ("h", seconds // 3600)
        for name, seconds in WINDOW_SECONDS.items()
    },
    ALL_TIME: ("d", ALL_TIME_DAYS),
}
"""Window name → (granularity, how many buckets of it): a window under a day sums minute
buckets, a longer one hour buckets, all-time the day buckets."""

Counters = dict[str, int]
FINE_FIELDS = frozenset("hef")
"""First letters of the fine-histogram fields, which live in the ``{g}f`` hash."""
CALIBRATED_COUNT = "Q"
CALIBRATED_ERRORS = "X"
"""Increment fields ``Q{j}``/``X{j}``: count and errors of fine cell j on calibrated
confidence; stored as ``h{j}``/``e{j}`` of the ``{g}q`` hash."""
CALIBRATED_FINE = {CALIBRATED_COUNT: "h", CALIBRATED_ERRORS: "e"}


@dataclass(frozen=True, slots=True)
class SumFields:
    """Field names of one set's CBPE sums: count, Σc, Σc(1−c) (fixed point), and, for a
    labeled set, its correct count."""

    n: str
    conf: str
    var: str
    correct: str | None = None


ALL_PREDICTIONS = SumFields("En", "Ec", "Ev")
AUTO_PREDICTIONS = SumFields("Ean", "Eac", "Eav")
LABELED_PREDICTIONS = SumFields("Ln", "Lc", "Lv", "Lk")
LABELED_AUTO = SumFields("Lan", "Lac", "Lav", "Lak")
ESTIMATE_SETS = {
    "all": ALL_PREDICTIONS,
    "auto": AUTO_PREDICTIONS,
    "labeled": LABELED_PREDICTIONS,
    "labeled_auto": LABELED_AUTO,
}
ESTIMATE_FIELDS = tuple(
    f for s in ESTIMATE_SETS.values() for f in (s.n, s.conf, s.var, s.correct) if f is not None
)
SERIES_FIELDS = (
    "n",
    "rv",
    "B",
    "N",
    "Nn",
    *(f"{x}{i}" for x in "cks" for i in range(RELIABILITY_BINS)),
)
"""What one time-series point needs of its bucket."""

# Sums hashes field by field. Lua numbers are doubles, so each value is split into its
# digits above and below 1e9 (each part stays far below 2^53 over hundreds of hashes), and
# the caller joins them: the sum is exact however large the fixed-point values grow.
_SUM = """
local acc, order = {}, {}
for _, key in ipairs(KEYS) do
  local h = redis.call('HGETALL', key)
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    local e = acc[f]
    if not e then e = {0, 0}; acc[f] = e; order[#order + 1] = f end
    local sign = 1
    if string.sub(v, 1, 1) == '-' then sign = -1; v = string.sub(v, 2) end
    local n = #v
    if n > 9 then
      e[1] = e[1] + sign * tonumber(string.sub(v, 1, n - 9))
      e[2] = e[2] + sign * tonumber(string.sub(v, n - 8))
    else
      e[2] = e[2] + sign * tonumber(v)
    end
  end
end
local out = {}
for _, f in ipairs(order) do
  out[#out + 1] = f
  out[#out + 1] = string.format('%.0f', acc[f][1])
  out[#out + 1] = string.format('%.0f', acc[f][2])
end
return out
"""


def bucket_start(ms: int, granularity: str) -> int:
    size = GRANULARITY[granularity]
    return (ms // 1000) // size * size


@dataclass(frozen=True, slots=True)
class Calibration:
    window: str
    n_predictions: int
    n_labeled: int
    n_review: int
    ece: float | None
    mce: float | None
    brier: float | None
    nll: float | None
    classwise_ece: float | None
    accuracy: float | None
    coverage: float | None
    review_rate: float | None
    bins: list[ReliabilityBin]


@dataclass(frozen=True, slots=True)
class Point:
    coverage: float
    risk: float
    threshold: float


@dataclass(frozen=True, slots=True)
class RiskCoverageAnswer:
    window: str
    n_labeled: int
    aurc: float | None
    e_aurc: float | None
    points: list[Point]
    curve: RiskCoverage | None = None

    def risk_at_coverage(self, target_coverage: float) -> float | None:
        """Selective risk at ``target_coverage`` (see ``RiskCoverage.risk_at_coverage``)."""
        return None if self.curve is None else self.curve.risk_at_coverage(target_coverage)


class Totals:
    """Counters of many buckets summed, and the metrics they answer."""

    def __init__(self, counters: Counters) -> None:
        self.c = counters

    def get(self, field: str) -> int:
        return self.c.get(field, 0)

    def reliability(self) -> ReliabilityStats:
        m = RELIABILITY_BINS
        return ReliabilityStats(
            np.array([self.get(f"c{i}") for i in range(m)], dtype=np.int64),
            np.array([self.get(f"s{i}") / SCALE for i in range(m)]),
            np.array([self.get(f"k{i}") for i in range(m)], dtype=np.int64),
            self.get("B") / SCALE,
            self.get("N") / SCALE,
            self.get("Nn"),
        )

    def histogram(self, bins: int = FINE_BINS) -> ConfidenceHistogram:
        h = ConfidenceHistogram.empty(bins)
        for field, value in self.c.items():
            if field[0] in "hef" and field[1:].isdigit():
                j = int(field[1:])
                if field[0] == "h":
                    h.count[j] = value
                elif field[0] == "e":
                    h.errors[j] = value
                else:
                    h.conf_sum[j] = value / SCALE
        return h

    def classwise_ece(self) -> float | None:
        per_class: dict[str, ReliabilityStats] = {}
        for field, value in self.c.items():
            if "|" not in field or field[0] not in "CPH":
                continue
            head, cls = field.split("|", 1)
            i = int(head[1:])
            stats = per_class.setdefault(cls, ReliabilityStats.empty(RELIABILITY_BINS))
            if head[0] == "C":
                stats.count[i] = value
            elif head[0] == "P":
                stats.conf_sum[i] = value / SCALE
            else:
                stats.correct_sum[i] = value
        values = [v for s in per_class.values() if (v := ece(s)) is not None]
        return float(np.mean(values)) if values else None

    def confidence_sums(self, fields: SumFields) -> tuple[ConfidenceSums, int]:
        """One set's CBPE sums, and its correct count (0 for an unlabeled set)."""
        sums = ConfidenceSums(
            self.get(fields.n), self.get(fields.conf) / SCALE, self.get(fields.var) / SCALE
        )
        return sums, self.get(fields.correct) if fields.correct else 0


def _joined(flat: list[bytes]) -> Totals:
    """The ``_SUM`` script's answer: field, high part, low part, … → exact integers."""
    return Totals(
        {
            flat[i].decode(): int(flat[i + 1]) * 1_000_000_000 + int(flat[i + 2])
            for i in range(0, len(flat), 3)
        }
    )


def split_calibrated(fields: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """A bucket's counters as (other fields, ``{g}q`` hash fields under their stored names)."""
    rest: dict[str, int] = {}
    calibrated: dict[str, int] = {}
    for f, v in fields.items():
        letter = CALIBRATED_FINE.get(f[0])
        if letter is not None and f[1:].isdigit():
            calibrated[letter + f[1:]] = v
        else:
            rest[f] = v
    return rest, calibrated


def split_fine(fields: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """A bucket's counters as (main hash fields, fine-histogram hash fields)."""
    main: dict[str, int] = {}
    fine: dict[str, int] = {}
    for f, v in fields.items():
        (fine if f[0] in FINE_FIELDS and f[1:].isdigit() else main)[f] = v
    return main, fine


class WindowReader:
    """The read side: window answers from bucket hashes."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self._p = f"{prefix}agg:"
        self._sum = client.register_script(_SUM)

    def key(self, granularity: str, model: str, start: int, fine: bool | str = False) -> str:
        """``fine``: True (or "f") for the fine histogram, "q" for the calibrated one."""
        suffix = "f" if fine is True else fine or ""
        return bucket_key(self._p, granularity, model, start, suffix)

    def window_keys(
        self, model: str, window: str, now_s: int | None = None, fine: bool | str = False
    ) -> list[str]:
        """One key per bucket of the window, newest first (the time series' points)."""
        granularity, count = _window(window)
        size = GRANULARITY[granularity]
        now = int(time.time()) if now_s is None else now_s
        last = now // size * size
        return [self.key(granularity, model, last - i * size, fine) for i in range(count)]

    def summed_keys(
        self, model: str, window: str, now_s: int | None = None, fine: bool | str = False
    ) -> list[str]:
        """Keys whose sum is the window: the 7-day window's whole days come from day
        buckets, which hold exactly what their 24 hour buckets hold."""
        granularity, count = _window(window)
        if granularity != "h" or count <= 2 * 24:
            return self.window_keys(model, window, now_s, fine)
        hour, day = GRANULARITY["h"], GRANULARITY["d"]
        now = int(time.time()) if now_s is None else now_s
        end = now // hour * hour + hour  # the window is [end − count hours, end)
        start = end - count * hour
        first_day = -(-start // day) * day
        last_day = end // day * day
        hours = list(range(start, first_day, hour)) + list(range(last_day, end, hour))
        days = list(range(first_day, last_day, day))
        return [self.key("h", model, h, fine) for h in hours] + [
            self.key("d", model, d, fine) for d in days
        ]

    async def totals(
        self, model: str, window: str, now_s: int | None = None, fine: bool | str = False
    ) -> Totals:
        """The window's counters: the main hashes, or with ``fine`` the fine histograms."""
        keys = self.summed_keys(model, window, now_s, fine)
        return _joined(await self._sum(keys=keys, args=[]))

    async def calibration(self, model: str, window: str, now_s: int | None = None) -> Calibration:
        t = await self.totals(model, window, now_s)
        rel = t.reliability()
        n, review = t.get("n"), t.get("rv")
        return Calibration(
            window=window,
            n_predictions=n,
            n_labeled=rel.n,
            n_review=review,
            ece=ece(rel),
            mce=mce(rel),
            brier=brier(rel),
            nll=nll(rel),
            classwise_ece=t.classwise_ece(),
            accuracy=accuracy(rel),
            coverage=(n - review) / n if n else None,
            review_rate=review / n if n else None,
            bins=reliability_bins(rel),
        )

    async def risk_coverage(
        self, model: str, window: str, now_s: int | None = None
    ) -> RiskCoverageAnswer:
        histogram = (await self.totals(model, window, now_s, fine=True)).histogram()
        curve = histogram.curve()
        points = [
            Point(float(c), float(r), float(th))
            for c, r, th in zip(curve.coverage, curve.risk, curve.thresholds, strict=True)
        ]
        return RiskCoverageAnswer(
            window, int(histogram.count.sum()), curve.aurc, curve.e_aurc, points, curve
        )

    async def calibrated_histogram(
        self, model: str, window: str, now_s: int | None = None
    ) -> ConfidenceHistogram:
        """Labeled predictions of the window binned on calibrated confidence."""
        return (await self.totals(model, window, now_s, fine="q")).histogram(CALIBRATED_BINS)

    async def timeseries(
        self, model: str, window: str, now_s: int | None = None
    ) -> list[dict[str, float | int | None]]:
        keys = self.window_keys(model, window, now_s)
        pipe = self._r.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, SERIES_FIELDS)
        out = []
        for k, values in zip(keys, await pipe.execute(), strict=True):
            if not any(values):
                continue
            t = Totals({f: int(v) for f, v in zip(SERIES_FIELDS, values, strict=True) if v})
            rel = t.reliability()
            n, review = t.get("n"), t.get("rv")
            out.append(
                {
                    "bucket_start": int(k.rsplit(":", 1)[1]),
                    "n_predictions": n,
                    "n_labeled": rel.n,
                    "ece": ece(rel),
                    "brier": brier(rel),
                    "accuracy": accuracy(rel),
                    "coverage": (n - review) / n if n else None,
                    "review_rate": review / n if n else None,
                }
            )
        return sorted(out, key=lambda p: int(p["bucket_start"] or 0))

    async def models(self) -> list[str]:
        members = await self._r.smembers(f"{self._p}models")
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def labels_pending(self, model: str, horizon_s: int, now_s: int) -> int:
        """Predictions of ``model`` still waiting for a label within the label horizon.

        Counted per arrival slot (see :func:`pending_slot_seconds`): a slot stops counting
        once every join record stored in it has expired, so the count is exact to one slot
        (an hour at the default seven-day horizon), never short."""
        width = pending_slot_seconds(horizon_s)
        raw = await self._r.hgetall(unlabeled_key(self._p, model))
        return sum(int(v) for slot, v in raw.items() if int(slot) + width + horizon_s > now_s)


def pending_slot_seconds(horizon_s: int) -> int:
    """Width of the arrival slots in which the aggregator counts unlabeled predictions:
    1/168 of the label horizon (an hour at the default seven days), at least one second."""
    return max(1, horizon_s // 168)


def unlabeled_key(agg_prefix: str, model: str) -> str:
    """Hash of unlabeled predictions per arrival slot start (epoch s) of one model version;
    ``agg_prefix`` is ``<redis_prefix>agg:``."""
    return f"{agg_prefix}unlabeled-slots:{tagged(model)}"


def bucket_key(agg_prefix: str, granularity: str, model: str, start: int, suffix: str = "") -> str:
    """A bucket hash of ``model``: ``suffix`` "" main, "f" fine, "q" calibrated."""
    return f"{agg_prefix}{granularity}{suffix}:{tagged(model)}:{start}"


def index_key(agg_prefix: str, model: str) -> str:
    """Sorted set of the minute buckets of ``model`` that exist."""
    return f"{agg_prefix}idx:{tagged(model)}"


def join_key(agg_prefix: str, kind: str, tenant: str, event_id: str) -> str:
    """A join record (``kind`` ``pred`` or ``pending``) of one event, in its join shard."""
    scoped = f"{tenant}/{event_id}"
    return f"{agg_prefix}{kind}:{shard_tag('j', scoped)}:{scoped}"


def alert_key(agg_prefix: str, model: str, name: str, kind: str = "") -> str:
    """Alert state of ``model``: ``kind`` "" the state of metric ``name``; "baseline",
    "estimate-reference" or "history" (``name`` unused) the evaluator's references."""
    if kind:
        return f"{agg_prefix}alert:{kind}:{tagged(model)}"
    return f"{agg_prefix}alert:{tagged(model)}:{name}"


def _window(window: str) -> tuple[str, int]:
    if window not in WINDOWS:
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    return WINDOWS[window]
